"""Activity that asks one downstream service to migrate one tenant, and the answer's meaning."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from enum import Enum
from typing import NoReturn, TypeVar

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures
from infra.db.repository import TenantRepository
from infra.security.signing import CallSigner
from infra.telemetry.logging import redact
from infra.telemetry.metrics import migration_attempt
from tenancy.contracts import MigrateInput, MigrateResult
from tenancy.failures import FailureType, summarize
from tenancy.settings import DownstreamService

IDEMPOTENCY_HEADER = "Idempotency-Key"
T = TypeVar("T")


class Outcome(Enum):
    """What an HTTP status from a downstream service means for the call."""

    SUCCESS = "success"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


def classify_status(status_code: int) -> Outcome:
    """2xx succeeds; 408, 429 and 5xx are worth retrying; any other answer is final."""
    if 200 <= status_code < 300:
        return Outcome.SUCCESS
    if status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRYABLE
    return Outcome.REJECTED


def _reason(response: httpx.Response) -> str:
    """The service's own explanation if it gave one, trimmed to a line, secrets masked (a
    service may echo the request, bearer token included)."""
    detail: object = None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error") or body
    else:
        detail = body
    text = detail if isinstance(detail, str) else str(detail)
    return summarize(
        redact(f"HTTP {response.status_code}: {text}") if text else f"HTTP {response.status_code}"
    )


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
        url = f"{str(service.base_url).rstrip('/')}/internal/tenants/{request.tenant_id}/migrate"
        location = request.location
        body = {
            "tenantId": request.tenant_id,
            "storageMode": location.mode.value,
            "jdbcUrl": location.jdbc_url,
            "schema": location.schema_name,
            "database": location.database,
        }
        timeout = request.timeout.total_seconds()
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole
            # call, so a service that answers byte by byte is cut off too.
            async with asyncio.timeout(timeout):
                response = await self._http.post(
                    url,
                    json=body,
                    headers={
                        IDEMPOTENCY_HEADER: request.idempotency_key,
                        # A new token per attempt: its `jti` is single-use at the service.
                        "Authorization": "Bearer "
                        + self._signer.token(audience=service.name, tenant_id=request.tenant_id),
                    },
                    timeout=timeout,
                )
        except (httpx.TimeoutException, TimeoutError):
            await self._service_failed(request, f"no answer within {timeout}s")
        except httpx.TransportError as exc:
            await self._service_failed(
                request, f"cannot reach {service.name}: {type(exc).__name__}"
            )
        outcome = classify_status(response.status_code)
        if outcome is Outcome.SUCCESS:
            return await self._succeed(request, response)
        if outcome is Outcome.REJECTED:
            await self._rejected(request, _reason(response))
        await self._service_failed(request, _reason(response))

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
