"""Activity that asks one downstream service to migrate one tenant, and the answer's meaning.

An HTTP service answers within the attempt. A service with transport events gets a command on
the bus and the attempt completes asynchronously: `activities.commands.ReplyListener` settles it
with the same `MigrationLedger` when the service's signed reply comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping
from typing import Protocol, TypeVar

import httpx
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import attempt_actor, metadata_failures
from activities.commands import CommandChannel
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
from infra.events.commands import CommandType, ReplyOutcome
from infra.security.signing import CallSigner
from infra.slots import LOCAL_SLOT_WAIT, SharedSlots
from infra.telemetry.logging import redact
from infra.telemetry.metrics import migration_attempt
from tenancy.contracts import MigrateInput, MigrateResult
from tenancy.failures import FailureType, summarize
from tenancy.settings import DownstreamService

T = TypeVar("T")
_log = logging.getLogger(__name__)


class MigrationCall(Protocol):
    """What settling one migration call needs to know of it (a `MigrateInput`, or the stored
    command of an event-driven call)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def service(self) -> str: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def max_attempts(self) -> int | None: ...


class MigrationLedger:
    """What each answer of a migration call means: the tenant's migration record, the call
    metric, and the result or the typed failure the retry policy reads. One place for the HTTP
    call, the event-driven call and its reply listener."""

    def __init__(self, tenants: TenantRepository) -> None:
        self._tenants = tenants

    async def succeeded(
        self, meter: MetricMeter, call: MigrationCall, version: str
    ) -> MigrateResult:
        """The service applied (or found applied) `version`."""
        migration_attempt(meter, call.service, Outcome.SUCCESS.value)
        await _bookkeeping(self._tenants.migration_succeeded(call.tenant_id, call.service, version))
        return MigrateResult(service=call.service, version=version)

    async def rejected(
        self, meter: MetricMeter, call: MigrationCall, reason: str
    ) -> ApplicationError:
        """The service refused the call: final, whatever the attempts left."""
        migration_attempt(meter, call.service, Outcome.REJECTED.value)
        await _bookkeeping(
            self._tenants.migration_attempt_failed(call.tenant_id, call.service, reason)
        )
        return ApplicationError(reason, type=FailureType.MIGRATION_REJECTED, non_retryable=True)

    async def failed(
        self, meter: MetricMeter, call: MigrationCall, reason: str
    ) -> ApplicationError:
        """A call that reached the service, or timed out talking to it, failed in a way worth
        retrying: count it against the logical call, and fail for good at the limit."""
        migration_attempt(meter, call.service, Outcome.RETRYABLE.value)
        failures = await _bookkeeping(
            self._tenants.migration_call_failed(
                call.tenant_id, call.service, call.idempotency_key, reason
            )
        )
        if call.max_attempts is not None and failures >= call.max_attempts:
            return ApplicationError(
                reason, type=FailureType.MIGRATION_EXHAUSTED, non_retryable=True
            )
        return ApplicationError(reason, type=FailureType.MIGRATION_UNAVAILABLE)


class MigrationActivities:
    """Bound to one shared HTTP client, the repository, the configured services, the key
    that signs each call and (for services with transport events) the command channel.

    How many calls run at once is the worker's business, not the activity's: each service's
    calls have their own task queue and worker slots (see `worker.build_worker`), so a call
    never waits for a slot inside its attempt, where waiting would count against it.

    A local attempt (run inside the workflow task, see `workflows.provision.workflow`) takes
    one of the service's `slots`, waiting `LOCAL_SLOT_WAIT` at most, or declines
    (`LOCAL_DECLINED`: the run then schedules the regular activity on the service's queue,
    whose worker draws on the same slots, see
    `infra.slots`); so does a call to a service with transport events, which answers
    asynchronously, or to a service whose queue this process does not poll (see
    `attempt_locally`).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tenants: TenantRepository,
        services: Iterable[DownstreamService],
        signer: CallSigner,
        commands: CommandChannel | None = None,
        slots: Mapping[str, SharedSlots] | None = None,
    ) -> None:
        self._http = http
        self._signer = signer
        self._tenants = tenants
        self.ledger = MigrationLedger(tenants)
        self._commands = commands
        self._services = {service.name: service for service in services}
        # Each service's call slots in this process, shared with its task-queue worker.
        self.slots: Mapping[str, SharedSlots] = slots or {}
        self._local_slots: dict[str, SharedSlots] = {}

    def attempt_locally(self, services: Iterable[str]) -> None:
        """Make local attempts for `services` (those this process's workers poll the queues
        of), drawing on their slots; HTTP services only."""
        for name in services:
            service = self._services.get(name)
            if service is not None and not service.over_events and name in self.slots:
                self._local_slots[name] = self.slots[name]

    @activity.defn(name="migrate_service")
    async def migrate_service(self, request: MigrateInput) -> MigrateResult:
        """Ask the service to migrate (its endpoint, or a command on the bus); raise a typed
        failure the retry policy reads.

        Only calls that reached the service (or timed out talking to it) count against
        `request.max_attempts`; a failure of the platform's own bookkeeping is retried by
        Temporal without counting."""
        service = self._services.get(request.service)
        if activity.info().is_local:
            return await self._local(service, request)
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
        if service.over_events:
            return await self._command(request)
        return await self._activate(request, await self._call(service, request))

    async def _activate(self, request: MigrateInput, result: MigrateResult) -> MigrateResult:
        """With `request.activate`, move the tenant to ACTIVE if this was its last service.
        Best effort: when this cannot tell (the metadata database failing), the run makes the
        transition itself."""
        if not request.activate:
            return result
        try:
            activated = await self._tenants.activate_if_migrated(request.tenant_id, attempt_actor())
        except Exception as exc:
            _log.warning("could not check %s for activation: %s", request.tenant_id, exc)
            return result
        return result.model_copy(update={"activated": activated})

    async def _local(
        self, service: DownstreamService | None, request: MigrateInput
    ) -> MigrateResult:
        """A local attempt: made now with one of the service's local slots, or declined."""
        slots = self._local_slots.get(request.service)
        if service is None or slots is None or not await slots.take_within(LOCAL_SLOT_WAIT):
            raise ApplicationError(
                f"{request.service}: no free call slot in this worker within "
                f"{LOCAL_SLOT_WAIT.total_seconds():g} s; the call goes to its queue",
                type=FailureType.LOCAL_DECLINED,
            )
        try:
            await _bookkeeping(
                self._tenants.migration_attempt_started(request.tenant_id, request.service)
            )
            result = await self._call(service, request)
        finally:
            slots.give()
        return await self._activate(request, result)

    async def _command(self, request: MigrateInput) -> MigrateResult:
        """Send the MigrateTenant command and leave the attempt open for its reply; a final
        reply already taken (it came after an earlier attempt's wait ran out) settles now."""
        assert self._commands is not None, "a worker with events services has a command channel"
        meter = activity.metric_meter()
        prior = await self._commands.prior(CommandType.MIGRATE, request.idempotency_key)
        if prior is not None and prior.unanswered_send:
            # The last send's wait ran out: a call that timed out, as for HTTP.
            failure = await self.ledger.failed(
                meter,
                request,
                f"no reply from {request.service} within {request.timeout.total_seconds():g}s",
            )
            if failure.non_retryable:
                raise failure
        settled = await self._commands.send(
            CommandType.MIGRATE,
            service=request.service,
            tenant_id=request.tenant_id,
            location=request.location,
            idempotency_key=request.idempotency_key,
            max_attempts=request.max_attempts,
            task_token=activity.info().task_token,
        )
        if settled is None:
            activity.raise_complete_async()
        if settled.outcome == ReplyOutcome.SUCCEEDED:
            return await self.ledger.succeeded(meter, request, settled.version or "")
        raise await self.ledger.rejected(meter, request, settled.reason or "rejected")

    async def _call(self, service: DownstreamService, request: MigrateInput) -> MigrateResult:
        meter = activity.metric_meter()
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
            raise await self.ledger.failed(meter, request, str(exc)) from None
        outcome = classify_status(response.status_code)
        if outcome is Outcome.SUCCESS:
            try:
                version = str(response.json()["version"])
            except (ValueError, KeyError, TypeError):
                raise await self.ledger.failed(
                    meter,
                    request,
                    summarize(
                        redact(f"HTTP {response.status_code} without a version: {response.text}")
                    ),
                ) from None
            return await self.ledger.succeeded(meter, request, version)
        if outcome is Outcome.REJECTED:
            raise await self.ledger.rejected(meter, request, answer_reason(response))
        raise await self.ledger.failed(meter, request, answer_reason(response))


async def _bookkeeping(write: Awaitable[T]) -> T:
    """Run one of the platform's own metadata writes around the call (see
    `activities.bookkeeping`): its failures never count against the service."""
    with metadata_failures("migration record"):
        return await write
