"""The platform's two calls, migrate and teardown, whatever carries them (HTTP or the bus).

`migrate_tenant` and `teardown_tenant` are the work itself, after the token, the idempotency key
and the body have passed; the HTTP routes call them once FastAPI has done those checks. For a
transport without HTTP, `PlatformCalls.answer` runs the same checks in the same order (token,
Idempotency-Key, body, tenant) and answers with the status and JSON body the HTTP endpoint would
have answered with, errors as the same problem documents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from examples.downstream_service.auth import PlatformCall, TokenVerifier
from examples.downstream_service.errors import (
    DownstreamError,
    InvalidRequest,
    MissingIdempotencyKey,
    TokenExpired,
    TokenReplayed,
    body_validation_error,
)
from examples.downstream_service.migrator import Migrator
from examples.downstream_service.models import (
    MigrateRequest,
    MigrateResponse,
    StorageMode,
    TeardownResponse,
)

_log = logging.getLogger(__name__)


class Operation(StrEnum):
    """The two calls the platform makes."""

    MIGRATE = "migrate"
    TEARDOWN = "teardown"

    def path(self, tenant_id: str) -> str:
        """The HTTP path of this call (the problem documents' `instance`)."""
        if self is Operation.MIGRATE:
            return f"/internal/tenants/{tenant_id}/migrate"
        return f"/internal/tenants/{tenant_id}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the HTTP endpoint answers: its status code and JSON body."""

    status: int
    body: dict[str, Any]

    @property
    def detail(self) -> str:
        """The problem's detail (errors), else an empty string."""
        detail = self.body.get("detail")
        return detail if isinstance(detail, str) else ""


def require_idempotency_key(key: str | None) -> str:
    """The call's Idempotency-Key, stripped; MissingIdempotencyKey if it is missing or blank."""
    if key is None or not key.strip():
        raise MissingIdempotencyKey("the Idempotency-Key header is required")
    return key.strip()


def migrate_tenant(
    migrator: Migrator,
    tenant_id: str,
    body: MigrateRequest,
    idempotency_key: str,
    call: PlatformCall,
) -> MigrateResponse:
    """Apply this service's pending migrations to the tenant's storage (blocking).

    A repeat under the same idempotency key applies nothing and answers the same version.
    """
    if body.tenant_id != tenant_id:
        raise InvalidRequest.field("tenantId", "must equal the tenant id in the path")
    _log.info(
        "migrate tenant=%s mode=%s jdbcUrl=%s idempotency_key=%s jti=%s",
        tenant_id,
        body.storage_mode,
        body.jdbc_url,
        idempotency_key,
        call.jti,
    )
    outcome = migrator.migrate(body.storage_address, body.schema_name)
    return MigrateResponse(version=outcome.version, applied=outcome.applied)


def teardown_tenant(
    migrator: Migrator,
    tenant_id: str,
    body: MigrateRequest,
    idempotency_key: str,
    call: PlatformCall,
) -> TeardownResponse:
    """Drop this service's objects and migration history from the tenant's storage (blocking)."""
    if body.tenant_id != tenant_id:
        raise InvalidRequest.field("tenantId", "must equal the tenant id in the path")
    _log.info(
        "teardown tenant=%s mode=%s jdbcUrl=%s idempotency_key=%s jti=%s",
        tenant_id,
        body.storage_mode,
        body.jdbc_url,
        idempotency_key,
        call.jti,
    )
    dropped = migrator.teardown(
        body.storage_address,
        body.schema_name,
        own_database=body.storage_mode is StorageMode.DATABASE,
    )
    return TeardownResponse(tenant_id=tenant_id, dropped=dropped)


class PlatformCalls:
    """The calls as the HTTP endpoints take them, for transports that are not HTTP."""

    def __init__(self, verifier: TokenVerifier, migrator: Migrator) -> None:
        self._verifier = verifier
        self._migrator = migrator

    def answer(
        self,
        operation: Operation,
        tenant_id: str,
        body: Mapping[str, Any],
        idempotency_key: str | None,
        token: str | None,
    ) -> tuple[Answer, PlatformCall | None]:
        """Do the call and return what HTTP would answer, with the verified call (None when
        the token was refused). Blocking: run it in a thread.

        TokenReplayed and TokenExpired are raised rather than answered: a caller that
        receives commands again (a redelivery) decides what a used or stale token means.
        """
        instance = operation.path(tenant_id)
        call: PlatformCall | None = None
        try:
            call = self._verifier.verify(f"Bearer {token}" if token else None, tenant_id)
            key = require_idempotency_key(idempotency_key)
            try:
                request = MigrateRequest.model_validate(body)
            except ValidationError as exc:
                raise body_validation_error(exc) from None
            response: MigrateResponse | TeardownResponse
            if operation is Operation.MIGRATE:
                response = migrate_tenant(self._migrator, tenant_id, request, key, call)
            else:
                response = teardown_tenant(self._migrator, tenant_id, request, key, call)
        except (TokenReplayed, TokenExpired):
            raise
        except DownstreamError as exc:
            return Answer(exc.status_code, exc.problem(instance)), call
        except Exception:
            # As over HTTP: a 500 whose detail points at the log, where the traceback goes.
            _log.exception("%s of tenant %s failed unexpectedly", operation, tenant_id)
            error = DownstreamError("unexpected error; see the service's log")
            return Answer(error.status_code, error.problem(instance)), call
        return Answer(200, response.model_dump(mode="json", by_alias=True)), call
