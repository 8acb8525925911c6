"""Errors the service answers with; each carries its HTTP status and a stable `code`.

    DownstreamError (500)           unexpected failure while migrating
    ├── MissingIdempotencyKey (400)
    ├── InvalidRequest (422)        names the offending field
    ├── TargetMissing (409)         tenant database or schema not provisioned: not retryable
    └── StorageUnavailable (503)    PostgreSQL unreachable: retryable
        ├── NotConfigured (503)     DOWNSTREAM_DATABASE_URL unset
        └── MigrationBusy (503)     another call holds the tenant's migration lock

The platform retries 408, 429 and 5xx and gives up at once on any other 4xx, so the status is the
whole contract; `code` and `detail` are for people reading logs.
"""

from __future__ import annotations

from typing import Any


class DownstreamError(Exception):
    """Base of every error the service renders as a JSON response."""

    status_code = 500
    code = "migration_failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        """JSON body of the response."""
        return {"code": self.code, "detail": self.detail}


class MissingIdempotencyKey(DownstreamError):
    """The `Idempotency-Key` header is missing or blank."""

    status_code = 400
    code = "missing_idempotency_key"


class InvalidRequest(DownstreamError):
    """The request is well-formed JSON but a field is invalid."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        fields = ", ".join(error["field"] for error in errors)
        super().__init__(f"invalid field(s): {fields}")
        self.errors = errors

    @classmethod
    def field(cls, field: str, message: str, location: str = "body") -> InvalidRequest:
        """One invalid field."""
        return cls([{"field": field, "location": location, "message": message}])

    def body(self) -> dict[str, Any]:
        """JSON body of the response, listing every invalid field."""
        return {**super().body(), "errors": self.errors}


class TargetMissing(DownstreamError):
    """The tenant's database or schema does not exist (yet): the platform must create it."""

    status_code = 409
    code = "target_missing"


class StorageUnavailable(DownstreamError):
    """PostgreSQL cannot be reached right now; the call may succeed later."""

    status_code = 503
    code = "storage_unavailable"


class NotConfigured(StorageUnavailable):
    """The service does not know which PostgreSQL server to migrate."""

    code = "not_configured"


class MigrationBusy(StorageUnavailable):
    """Another call kept the tenant's migration lock longer than the lock timeout."""

    code = "migration_busy"
