"""The route guard: who may call, and what body they may send, settled before the body is read.

FastAPI reads and parses a route's body before it resolves the route's dependencies, so an
anonymous caller could make the API buffer and parse any amount of JSON only to be told 401
at the end. `GuardedRoute` runs first, in this order, and reads nothing it does not have to:

    401 / 403   the bearer token and the scope the route's dependencies ask for (`ScopeCheck`)
    415         a route that takes a body gets `application/json` (or `+json`), or nothing else
                (a route whose body is optional also takes a request without any body)
    413         a declared `Content-Length` above the limit, without reading a byte; then the
                body is read while counting, and reading stops as soon as it passes the limit
    400         a body that is not JSON, or nests deeper or holds a longer number than
                `api/json_body.py` allows, naming the byte where it stopped

Only then does FastAPI get the request, with the body already read (at most the limit, held
once), and parse and validate it (422 for invalid fields).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive

from api.deps import ScopeCheck, authenticate
from api.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType
from api.json_body import check_json

JSON = "application/json"


def required_scopes(dependant: Dependant) -> list[ScopeCheck]:
    """The scope checks among a route's dependencies, at any depth."""
    found = [d.call for d in dependant.dependencies if isinstance(d.call, ScopeCheck)]
    for sub in dependant.dependencies:
        found += required_scopes(sub)
    return found


def is_json(content_type: str | None) -> bool:
    """True for `application/json` and `application/<anything>+json`, parameters aside."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def declares_no_body(request: Request) -> bool:
    """True when the request says it sends no body (no length, or 0, and not chunked)."""
    headers = request.headers
    return headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to exceed `limit` bytes."""
    too_large = PayloadTooLarge(f"the body exceeds {limit} bytes", maxBytes=limit)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise MalformedBody("the client went away before sending the whole body") from None
    return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives `body` once, then whatever the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class GuardedRoute(APIRoute):
    """An APIRoute that authenticates, authorises and bounds the body before FastAPI reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler for this route, behind the guard."""
        handler = super().get_route_handler()
        checks = required_scopes(self.dependant)
        takes_body = self.body_field is not None
        body_optional = self.body_field is not None and not self.body_field.field_info.is_required()

        async def guarded(request: Request) -> Response:
            if checks:
                principal = await authenticate(request)
                for check in checks:
                    check.check(principal)
            if not takes_body:
                return await handler(request)
            content_type = request.headers.get("content-type")
            if not is_json(content_type):
                if body_optional and content_type is None and declares_no_body(request):
                    return await handler(request)
                raise UnsupportedMediaType(f"this operation takes a {JSON} body")
            limit: int = request.state.max_body_bytes
            body = await read_capped(request, limit)
            if body:
                check_json(body)
            return await handler(Request(request.scope, _replay(body, request.receive)))

        return guarded
