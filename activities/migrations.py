"""Activity that asks one downstream service to migrate one tenant, and the answer's meaning."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import NoReturn, TypeVar

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures
from activities.downstream import (
    IDEMPOTENCY_HEADER as IDEMPOTENCY_HEADER,
)
from activities.downstream import (
    Outcome,
    Unreachable,
    answer_reason,
    classify_status,
    signed_call,
)
from infra.db.repository import TenantRepository
from infra.security.signing import CallSigner
from infra.telemetry.logging import redact
from infra.telemetry.metrics import migration_attempt
from tenancy.contracts import MigrateInput, MigrateResult
from tenancy.failures import FailureType, summarize
from tenancy.settings import DownstreamService

T = TypeVar("T")


class MigrationActivities:
    """Bound to one shared HTTP client, the repository, the configured services and the key
    that signs each call.

    How many calls run at once is the worker's business, not the activity's: each service's
    calls have their own task queue and worker slots (see `worker.build_worker`), so a call
    never waits for a slot inside its attempt, where waiting would count against it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tenants: TenantRepository,
        services: Iterable[DownstreamService],
        signer: CallSigner,
    ) -> None:
        self._http = http
        self._signer = signer
        self._tenants = tenants
        self._services = {service.name: service for service in services}

    @activity.defn(name="migrate_service")
    async def migrate_service(self, request: MigrateInput) -> MigrateResult:
        """POST the service's migrate endpoint; raise a typed failure the retry policy reads.

        Only calls that reached the service (or timed out talking to it) count against
        `request.max_attempts`; a failure of the platform's own bookkeeping is retried by
        Temporal without counting."""
        service = self._services.get(request.service)
        if service is None:
            migration_attempt(activity.metric_meter(), request.service, Outcome.REJECTED.value)
            raise ApplicationError(
                f"service {request.service!r} is not configured on this worker",
                type=FailureType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        await _bookkeeping(
            self._tenants.migration_attempt_started(request.tenant_id, request.service)
        )
        return await self._call(service, request)

    async def _call(self, service: DownstreamService, request: MigrateInput) -> MigrateResult:
        try:
            response = await signed_call(
                self._http,
                self._signer,
                service,
                "POST",
                f"/internal/tenants/{request.tenant_id}/migrate",
                tenant_id=request.tenant_id,
                location=request.location,
                idempotency_key=request.idempotency_key,
                timeout=request.timeout.total_seconds(),
            )
        except Unreachable as exc:
            await self._service_failed(request, str(exc))
        outcome = classify_status(response.status_code)
        if outcome is Outcome.SUCCESS:
            return await self._succeed(request, response)
        if outcome is Outcome.REJECTED:
            await self._rejected(request, answer_reason(response))
        await self._service_failed(request, answer_reason(response))

    async def _succeed(self, request: MigrateInput, response: httpx.Response) -> MigrateResult:
        try:
            version = str(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            await self._service_failed(
                request,
                summarize(
                    redact(f"HTTP {response.status_code} without a version: {response.text}")
                ),
            )
        migration_attempt(activity.metric_meter(), request.service, Outcome.SUCCESS.value)
        await _bookkeeping(
            self._tenants.migration_succeeded(request.tenant_id, request.service, version)
        )
        return MigrateResult(service=request.service, version=version)

    async def _rejected(self, request: MigrateInput, reason: str) -> NoReturn:
        """The service refused the call: final, whatever the attempts left."""
        migration_attempt(activity.metric_meter(), request.service, Outcome.REJECTED.value)
        await _bookkeeping(
            self._tenants.migration_attempt_failed(request.tenant_id, request.service, reason)
        )
        raise ApplicationError(reason, type=FailureType.MIGRATION_REJECTED, non_retryable=True)

    async def _service_failed(self, request: MigrateInput, reason: str) -> NoReturn:
        """A call that reached the service, or timed out talking to it, failed in a way worth
        retrying: count it against the logical call, and fail for good at the limit."""
        migration_attempt(activity.metric_meter(), request.service, Outcome.RETRYABLE.value)
        failures = await _bookkeeping(
            self._tenants.migration_call_failed(
                request.tenant_id, request.service, request.idempotency_key, reason
            )
        )
        if request.max_attempts is not None and failures >= request.max_attempts:
            raise ApplicationError(
                reason, type=FailureType.MIGRATION_EXHAUSTED, non_retryable=True
            ) from None
        raise ApplicationError(reason, type=FailureType.MIGRATION_UNAVAILABLE) from None


async def _bookkeeping(write: Awaitable[T]) -> T:
    """Run one of the platform's own metadata writes around the call (see
    `activities.bookkeeping`): its failures never count against the service."""
    with metadata_failures("migration record"):
        return await write
