"""The console's way to the REST API: the same app, called in-process with the operator's token.

The console has no privileged path of its own. Each page and action is one or more calls of the
public API (`/api/...`) with the signed-in operator's bearer token, through httpx's ASGI
transport into this very app: the same authentication, scopes, validation, status rules, audit
trail and problem details as for curl or platformctl, without a network hop. So a button hidden
for a read-only token is also refused by the API if a request is forged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

# The host name internal requests carry; nothing resolves it, the transport never leaves the app.
_INTERNAL_BASE = "http://platform-console.internal"


@dataclass(frozen=True)
class ApiAnswer:
    """One answer of the API: status and JSON body (a problem document on errors)."""

    status: int
    body: Any = field(default=None)

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300

    @property
    def problem(self) -> str:
        """One line for the operator: the problem's detail and its field errors."""
        if not isinstance(self.body, dict):
            return f"HTTP {self.status}"
        detail = str(self.body.get("detail") or self.body.get("title") or f"HTTP {self.status}")
        errors = self.body.get("errors") or []
        fields = "; ".join(
            f"{error.get('field')}: {error.get('message')}"
            for error in errors
            if isinstance(error, dict)
        )
        return f"{detail} ({fields})" if fields else detail


def _with_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """`app` with the lifespan state the server gives every request (resources, verifier)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return asgi


class ConsoleApi:
    """The REST API as one operator: `get`/`post`/`delete` return `ApiAnswer`s."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> ApiAnswer:
        """One API call; `params` with None values are left out."""
        query = {name: value for name, value in (params or {}).items() if value not in (None, "")}
        response = await self._http.request(method, path, params=query, json=json)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return ApiAnswer(response.status_code, body)

    async def get(self, path: str, **params: Any) -> ApiAnswer:
        """GET `path` with query `params`."""
        return await self.call("GET", path, params=params)

    async def post(self, path: str, json: Any = None, **params: Any) -> ApiAnswer:
        """POST `json` (if any) to `path`."""
        return await self.call("POST", path, params=params, json=json)

    async def delete(self, path: str, **params: Any) -> ApiAnswer:
        """DELETE `path` with query `params`."""
        return await self.call("DELETE", path, params=params)


@asynccontextmanager
async def api_for(request: Request, token: str) -> AsyncIterator[ConsoleApi]:
    """The REST API of this app, called with `token` as the operator calling the console."""
    state: dict[str, Any] = dict(request.scope.get("state") or {})
    client = request.client
    transport = httpx.ASGITransport(
        app=_with_state(request.app, state),
        client=(client.host, client.port) if client else ("127.0.0.1", 0),
    )
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "platform-console"}
    async with httpx.AsyncClient(
        transport=transport, base_url=_INTERNAL_BASE, headers=headers, timeout=30
    ) as http:
        yield ConsoleApi(http)
