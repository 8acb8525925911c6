"""Errors the service answers with, as RFC 9457 `application/problem+json`.

    DownstreamError (500)           unexpected failure while migrating
    ├── TeardownFailed (500)        unexpected failure while tearing down, or objects left
    ├── MissingIdempotencyKey (400)
    ├── Unauthenticated (401)       bearer token missing or invalid; WWW-Authenticate says why
    │   ├── TokenExpired (401)      its exp has passed
    │   └── TokenReplayed (401)     its jti was used before
    ├── InvalidRequest (422)        names the offending field(s)
    ├── TargetMissing (409)         tenant database or schema not provisioned: not retryable
    ├── NothingToTearDown (404)     teardown: the storage is gone or holds nothing of ours: done
    ├── TeardownBlocked (409)       teardown: another role's object depends on ours: not retryable
    ├── KeysUnavailable (503)       the platform's JWKS cannot be fetched: retryable
    └── StorageUnavailable (503)    PostgreSQL unreachable: retryable
        ├── NotConfigured (503)     DOWNSTREAM_DATABASE_URL unset
        └── MigrationBusy (503)     another call holds the tenant's migration lock

The platform retries 408, 429 and 5xx and gives up at once on any other 4xx, so the status is the
whole contract. It stores `detail` as the tenant's `lastError`, so details are one short line that
says what was wrong, and never carry a token or a password. `code` (also the last part of `type`)
is a stable extension member for people and tools reading logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:downstream-service:problem:"
# RFC 6750 section 3: the characters an error_description may hold (no quote, no backslash).
_NOT_IN_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


class DownstreamError(Exception):
    """Base of every error the service renders as a problem response."""

    status_code = 500
    code = "migration_failed"
    title = "Migration failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def problem(self, instance: str) -> dict[str, Any]:
        """The RFC 9457 body; `instance` is the request path."""
        return {
            "type": PROBLEM_TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
            "instance": instance,
            "code": self.code,
        }

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class MissingIdempotencyKey(DownstreamError):
    """The `Idempotency-Key` header is missing or blank."""

    status_code = 400
    code = "missing_idempotency_key"
    title = "Idempotency-Key required"


class Unauthenticated(DownstreamError):
    """The call does not carry a valid token of the platform (RFC 6750 `WWW-Authenticate`)."""

    status_code = 401
    code = "invalid_token"
    title = "Unauthenticated platform call"

    def __init__(self, detail: str, *, realm: str, token_given: bool = True) -> None:
        super().__init__(detail)
        self.realm = realm
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        """`WWW-Authenticate: Bearer realm=..., error=..., error_description=...`."""
        challenge = f'Bearer realm="{self.realm}"'
        # RFC 6750 section 3.1: a request without any bearer token gets no error code.
        if self.token_given:
            description = _NOT_IN_DESCRIPTION.sub("?", self.detail)
            challenge += f', error="invalid_token", error_description="{description}"'
        return {"WWW-Authenticate": challenge}


class TokenExpired(Unauthenticated):
    """The token's `exp` has passed (a command that waited on the bus too long, say)."""


class TokenReplayed(Unauthenticated):
    """Every check passed but the token's `jti` was used before.

    Over HTTP a plain 401; the command consumer answers a redelivered command from what the
    first delivery answered instead (see `consumer`).
    """

    def __init__(self, detail: str, *, realm: str, jti: str) -> None:
        super().__init__(detail, realm=realm)
        self.jti = jti


class InvalidRequest(DownstreamError):
    """The request is well-formed JSON but a field is invalid."""

    status_code = 422
    code = "invalid_request"
    title = "Invalid request"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        fields = ", ".join(error["field"] for error in errors)
        super().__init__(f"invalid field(s): {fields}")
        self.errors = errors

    @classmethod
    def field(cls, field: str, message: str, location: str = "body") -> InvalidRequest:
        """One invalid field."""
        return cls([{"field": field, "location": location, "message": message}])

    def problem(self, instance: str) -> dict[str, Any]:
        """The problem body, listing every invalid field as `{field, location, message}`."""
        return {**super().problem(instance), "errors": self.errors}


class TargetMissing(DownstreamError):
    """The tenant's database or schema does not exist (yet): the platform must create it."""

    status_code = 409
    code = "target_missing"
    title = "Tenant storage missing"


class TeardownFailed(DownstreamError):
    """A teardown failed unexpectedly, or found objects of its own left after dropping."""

    code = "teardown_failed"
    title = "Teardown failed"


class NothingToTearDown(DownstreamError):
    """The tenant's schema or database is gone, or holds nothing of this service's.

    The platform counts a 404 as a finished teardown, as it does a 200.
    """

    status_code = 404
    code = "nothing_to_tear_down"
    title = "Nothing to tear down"


class TeardownBlocked(DownstreamError):
    """An object this service does not own depends on one it owns: dropping would reach it."""

    status_code = 409
    code = "teardown_blocked"
    title = "Teardown blocked"


class KeysUnavailable(DownstreamError):
    """The platform's public keys cannot be fetched right now; the call may succeed later."""

    status_code = 503
    code = "platform_keys_unavailable"
    title = "Platform keys unavailable"


class StorageUnavailable(DownstreamError):
    """PostgreSQL cannot be reached right now; the call may succeed later."""

    status_code = 503
    code = "storage_unavailable"
    title = "Storage unavailable"


class NotConfigured(StorageUnavailable):
    """The service does not know which PostgreSQL server to migrate."""

    code = "not_configured"
    title = "Storage not configured"


class MigrationBusy(StorageUnavailable):
    """Another call kept the tenant's migration lock longer than the lock timeout."""

    code = "migration_busy"
    title = "Migration in progress"


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """FastAPI's validation errors as one InvalidRequest naming each field and its location."""
    return _invalid(exc.errors())


def body_validation_error(exc: ValidationError) -> InvalidRequest:
    """A body model's validation errors as the same InvalidRequest HTTP answers with."""
    return _invalid([{**error, "loc": ("body", *error.get("loc", ()))} for error in exc.errors()])


def _invalid(raw: Sequence[Any]) -> InvalidRequest:
    errors = []
    for error in raw:
        location, *path = error.get("loc", ()) or ("body",)
        errors.append(
            {
                "field": ".".join(str(part) for part in path) or str(location),
                "location": str(location),
                "message": str(error.get("msg", "invalid")),
            }
        )
    return InvalidRequest(errors)


def _render(request: Request, error: DownstreamError) -> JSONResponse:
    return JSONResponse(
        error.problem(request.url.path),
        status_code=error.status_code,
        headers=error.headers(),
        media_type=PROBLEM_JSON,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error response of `app` as problem+json."""

    async def render(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DownstreamError)
        return _render(request, exc)

    async def render_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _render(request, validation_error(exc))

    async def render_http(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers: unknown path (404), wrong method (405).
        assert isinstance(exc, StarletteHTTPException)
        title = HTTPStatus(exc.status_code).phrase
        return JSONResponse(
            {
                "type": "about:blank",
                "title": title,
                "status": exc.status_code,
                "detail": exc.detail if isinstance(exc.detail, str) else title,
                "instance": request.url.path,
            },
            status_code=exc.status_code,
            headers=exc.headers,
            media_type=PROBLEM_JSON,
        )

    async def render_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs the traceback.
        return _render(request, DownstreamError("unexpected error; see the service's log"))

    app.add_exception_handler(DownstreamError, render)
    app.add_exception_handler(RequestValidationError, render_validation)
    app.add_exception_handler(StarletteHTTPException, render_http)
    app.add_exception_handler(Exception, render_unexpected)
