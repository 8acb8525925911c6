"""Activity that asks one downstream service to migrate one tenant, and the answer's meaning."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from enum import Enum
from typing import NoReturn

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tenancy.contracts import MigrateInput, MigrateResult
from tenancy.failures import FailureType, summarize
from tenancy.limits import NoSlot, ServerLimits, remaining_budget, server_key
from tenancy.logging import redact
from tenancy.metrics import migration_attempt
from tenancy.repository import TenantRepository
from tenancy.settings import DownstreamService
from tenancy.signing import CallSigner

IDEMPOTENCY_HEADER = "Idempotency-Key"
# What an attempt keeps, beyond the call's own timeout, for the bookkeeping around the call
# when it waits for a slot (start-to-close is the call timeout plus 10 s).
BOOKKEEPING_RESERVE = timedelta(seconds=5)


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
    """Bound to one shared HTTP client, the repository, the configured services and the cap on
    concurrent migration calls per tenant storage server (the services migrate into it)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        tenants: TenantRepository,
        services: Iterable[DownstreamService],
        signer: CallSigner,
        limits: ServerLimits,
    ) -> None:
        self._http = http
        self._limits = limits
        self._signer = signer
        self._tenants = tenants
        self._services = {service.name: service for service in services}

    @activity.defn(name="migrate_service")
    async def migrate_service(self, request: MigrateInput) -> MigrateResult:
        """POST the service's migrate endpoint; raise a typed failure the retry policy reads."""
        service = self._services.get(request.service)
        if service is None:
            migration_attempt(activity.metric_meter(), request.service, Outcome.REJECTED.value)
            raise ApplicationError(
                f"service {request.service!r} is not configured on this worker",
                type=FailureType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        server = server_key(request.location.jdbc_url)
        try:
            async with self._limits.slot(
                server, remaining_budget(request.timeout + BOOKKEEPING_RESERVE)
            ):
                return await self._call(service, request)
        except NoSlot as exc:
            migration_attempt(activity.metric_meter(), request.service, Outcome.RETRYABLE.value)
            raise ApplicationError(
                f"migration throttled: {exc}", type=FailureType.MIGRATION_UNAVAILABLE
            ) from None

    async def _call(self, service: DownstreamService, request: MigrateInput) -> MigrateResult:
        await self._tenants.migration_attempt_started(request.tenant_id, request.service)
        url = f"{str(service.base_url).rstrip('/')}/internal/tenants/{request.tenant_id}/migrate"
        location = request.location
        body = {
            "tenantId": request.tenant_id,
            "storageMode": location.mode.value,
            "jdbcUrl": location.jdbc_url,
            "schema": location.schema_name,
            "database": location.database,
        }
        try:
            response = await self._http.post(
                url,
                json=body,
                headers={
                    IDEMPOTENCY_HEADER: request.idempotency_key,
                    # A new token per attempt: its `jti` is single-use at the service.
                    "Authorization": "Bearer "
                    + self._signer.token(audience=service.name, tenant_id=request.tenant_id),
                },
                timeout=request.timeout.total_seconds(),
            )
        except httpx.TimeoutException:
            await self._fail_attempt(
                request, f"no answer within {request.timeout.total_seconds()}s"
            )
        except httpx.TransportError as exc:
            await self._fail_attempt(request, f"cannot reach {service.name}: {type(exc).__name__}")
        else:
            outcome = classify_status(response.status_code)
            if outcome is Outcome.SUCCESS:
                return await self._succeed(request, response)
            await self._fail_attempt(
                request, _reason(response), non_retryable=outcome is Outcome.REJECTED
            )

    async def _succeed(self, request: MigrateInput, response: httpx.Response) -> MigrateResult:
        try:
            version = str(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            await self._fail_attempt(
                request,
                summarize(
                    redact(f"HTTP {response.status_code} without a version: {response.text}")
                ),
            )
        migration_attempt(activity.metric_meter(), request.service, Outcome.SUCCESS.value)
        await self._tenants.migration_succeeded(request.tenant_id, request.service, version)
        return MigrateResult(service=request.service, version=version)

    async def _fail_attempt(
        self, request: MigrateInput, reason: str, *, non_retryable: bool = False
    ) -> NoReturn:
        outcome = Outcome.REJECTED if non_retryable else Outcome.RETRYABLE
        migration_attempt(activity.metric_meter(), request.service, outcome.value)
        await self._tenants.migration_attempt_failed(request.tenant_id, request.service, reason)
        raise ApplicationError(
            reason,
            type=FailureType.MIGRATION_REJECTED
            if non_retryable
            else FailureType.MIGRATION_UNAVAILABLE,
            non_retryable=non_retryable,
        ) from None
