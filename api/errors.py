"""API errors, rendered as RFC 9457 `application/problem+json` by one handler.

    ApiError                      (500) base: carries its HTTP status, problem type and headers
    ├── Unauthorized              (401) no bearer token, or one that does not verify
    ├── Forbidden                 (403) a valid token without the scope the operation needs
    ├── MalformedBody             (400) the body is not JSON; names the byte position
    ├── PayloadTooLarge           (413) the body is larger than PLATFORM_API_MAX_BODY_BYTES
    ├── UriTooLong                (414) the request line is over its limit (api/limits.py)
    ├── HeaderFieldsTooLarge      (431) the header fields are over their limit (api/limits.py)
    ├── UnsupportedMediaType      (415) a body that is not application/json
    ├── InvalidRequest            (422) a field failed validation; lists every field
    ├── TenantNotFound            (404)
    ├── ServiceNotFound           (404) a service neither configured nor recorded
    ├── TenantConflict            (409) the id is taken (also when requests race)
    ├── StatusConflict            (409) the operation needs another status
    ├── FrameworkError            (4xx) raised by FastAPI itself: unparseable body, no route
    └── ServiceUnavailable        (503) PostgreSQL or Temporal cannot be reached in time

Routes and dependencies raise these; nothing else builds an error response. A lost database
connection (psycopg.OperationalError, PoolTimeout) is rendered as ServiceUnavailable wherever it
surfaces. 401 and 403 carry the RFC 6750 `WWW-Authenticate: Bearer ...` challenge.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

_log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
REALM = "platform-service"
# RFC 6750 section 3: error_description and scope values exclude '"', backslash and controls.
_UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def bearer_challenge(**params: str) -> str:
    """`Bearer realm="platform-service"`, then each parameter quoted, in the given order."""
    quoted = [f'realm="{REALM}"'] + [
        f'{name}="{_UNQUOTABLE.sub("", value)}"' for name, value in params.items()
    ]
    return "Bearer " + ", ".join(quoted)


class ApiError(Exception):
    """Base of every error the API answers with; subclasses set status and title."""

    status = 500
    title = "Internal error"
    slug = "internal"

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def problem(self, instance: str | None) -> dict[str, Any]:
        """The RFC 9457 body; without `instance` when the request's path is not to be
        repeated (a refused oversized target)."""
        body: dict[str, Any] = {
            "type": f"urn:platform-service:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extensions,
        }
        if instance is None:
            del body["instance"]
        return body


class Unauthorized(ApiError):
    """The request carries no usable bearer token.

    `error="invalid_token"` is sent only when a token was presented (RFC 6750 3.1): a request
    without any gets the bare challenge.
    """

    status = 401
    title = "Authentication required"
    slug = "unauthorized"

    def __init__(self, detail: str, *, token_presented: bool = True) -> None:
        challenge = (
            bearer_challenge(error="invalid_token", error_description=detail)
            if token_presented
            else bearer_challenge()
        )
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    """The token is valid but lacks the scope the operation needs."""

    status = 403
    title = "Insufficient scope"
    slug = "insufficient-scope"

    def __init__(self, detail: str, *, scope: str) -> None:
        challenge = bearer_challenge(error="insufficient_scope", scope=scope)
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, requiredScope=scope)


class MalformedBody(ApiError):
    """The body does not parse as JSON; `position` is the byte offset where parsing failed."""

    status = 400
    title = "Malformed body"
    slug = "malformed-body"


class PayloadTooLarge(ApiError):
    """The body exceeds the configured limit; `maxBytes` says how much is accepted."""

    status = 413
    title = "Content too large"
    slug = "content-too-large"


class UriTooLong(ApiError):
    """The request line exceeds its limit; `maxBytes` says how long it may be."""

    status = 414
    title = "URI Too Long"
    slug = "uri-too-long"


class HeaderFieldsTooLarge(ApiError):
    """The header fields together exceed their limit; `maxBytes` says how much is accepted."""

    status = 431
    title = "Request Header Fields Too Large"
    slug = "header-fields-too-large"


class UnsupportedMediaType(ApiError):
    """The operation takes a JSON body and the request declared something else, or nothing."""

    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"

    def __init__(self, detail: str) -> None:
        # RFC 9110 15.5.16: say which media type would have been accepted.
        super().__init__(detail, headers={"Accept-Post": "application/json"})


class InvalidRequest(ApiError):
    """Input failed validation; `errors` names each field."""

    status = 422
    title = "Invalid request"
    slug = "invalid-request"


class TenantNotFound(ApiError):
    """No tenant with that id."""

    status = 404
    title = "Tenant not found"
    slug = "tenant-not-found"


class ServiceNotFound(ApiError):
    """A service that is neither configured nor recorded for any non-deleted tenant."""

    status = 404
    title = "Service not found"
    slug = "service-not-found"


class TenantConflict(ApiError):
    """A tenant with that id exists already."""

    status = 409
    title = "Tenant already exists"
    slug = "tenant-exists"


class StatusConflict(ApiError):
    """The tenant's status does not allow the operation."""

    status = 409
    title = "Operation not allowed in this status"
    slug = "status-conflict"


class ServiceUnavailable(ApiError):
    """A backing service did not answer in time; the request may be retried."""

    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class FrameworkError(ApiError):
    """An error raised by FastAPI/Starlette itself (unparseable body, unknown route, ...),
    rendered like ours."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None) -> None:
        super().__init__(detail, headers=headers)
        self.status = status
        self.title = HTTPStatus(status).phrase
        self.slug = self.title.lower().replace(" ", "-")


def _field_name(loc: tuple[int | str, ...]) -> str:
    # Drop the "body"/"query"/"path" prefix: the caller wants the field it sent.
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


def validation_problem(exc: RequestValidationError) -> ApiError:
    """Turn pydantic's error list into one InvalidRequest that names every field, or a
    MalformedBody when the body did not even parse (FastAPI reports that as a validation
    error located at the byte offset, which is no field)."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            loc = tuple(err.get("loc", ()))
            position = loc[-1] if loc and isinstance(loc[-1], int) else None
            if position is not None and isinstance(exc.body, str):
                # The parser counts characters of the decoded text; the caller sent bytes.
                position = len(exc.body[:position].encode("utf-8", "surrogatepass"))
            reason = str(err.get("ctx", {}).get("error", "invalid JSON"))
            if position is None:
                return MalformedBody(f"the body is not valid JSON: {reason}")
            return MalformedBody(
                f"the body is not valid JSON: {reason} at byte {position}", position=position
            )
    fields = [
        {"field": _field_name(tuple(err.get("loc", ()))), "message": err.get("msg", "invalid")}
        for err in errors
    ]
    names = ", ".join(sorted({f["field"] for f in fields})) or "request"
    return InvalidRequest(f"invalid value for: {names}", errors=fields)


def install_error_handlers(app: FastAPI) -> None:
    """Register the one renderer of ApiError and the adapter for request validation."""

    async def render(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(
            exc.problem(request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_JSON,
            headers=exc.headers,
        )

    async def render_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return await render(request, validation_problem(exc))

    async def render_http(request: Request, exc: Exception) -> JSONResponse:
        # Framework-raised errors (unparseable body, unknown route, wrong method).
        assert isinstance(exc, StarletteHTTPException)
        return await render(request, FrameworkError(exc.status_code, str(exc.detail), exc.headers))

    async def render_database_down(request: Request, exc: Exception) -> JSONResponse:
        _log.warning("metadata database unavailable: %s", type(exc).__name__)
        return await render(request, ServiceUnavailable("the metadata database is unavailable"))

    async def render_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await render(request, ApiError("unexpected error; see the server log"))

    app.add_exception_handler(ApiError, render)
    app.add_exception_handler(RequestValidationError, render_validation)
    app.add_exception_handler(StarletteHTTPException, render_http)
    app.add_exception_handler(psycopg.OperationalError, render_database_down)
    app.add_exception_handler(PoolTimeout, render_database_down)
    app.add_exception_handler(Exception, render_unexpected)
