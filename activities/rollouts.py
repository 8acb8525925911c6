"""Activities of fleet rollouts: run one batch of tenants (claim, call each selected service
with bounded concurrency, record), and the rollout's and its waves' status changes.

A batch heartbeats every two seconds while it runs, so a lost worker shows in seconds. Whatever
stops a batch (a pause, a halt, a cancel, its worker's shutdown, a failure) it hands back the rows
it claimed and did not finish; a batch also starts by handing back any row of its wave still
RUNNING (an attempt that died could not), and the next batch calls those tenants again under the
same idempotency key (`rollout-{id}/pass-{n}/{tenant}/{service}`), which the services answer
without applying twice.

A batch applies the halt rule (`tenancy.rollouts.halts_since`) before it starts each tenant, on
the wave's counts at its start plus its own results so far: once the wave is over the limit, no
further tenant's calls start, and only the calls already in flight finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

import httpx
from temporalio import activity

from activities.bookkeeping import metadata_failures
from activities.commands import CommandChannel, NoReply
from activities.downstream import Outcome, Unreachable, answer_reason, classify_status, signed_call
from activities.storage import heartbeating
from infra.db.fleet import StorageFleet
from infra.db.repository import TenantRepository
from infra.db.rollouts import Claimed, RolloutRepository, RolloutStateRefused
from infra.events.bus import BusUnavailable
from infra.events.commands import CommandType, ReplyOutcome
from infra.security.signing import CallSigner
from infra.telemetry.metrics import migration_attempt, rollout_tenant_finished
from tenancy.failures import summarize
from tenancy.models import StorageLocation, StorageMode
from tenancy.naming import workflow_actor
from tenancy.rollouts import (
    RolloutAction,
    RolloutCounts,
    RolloutStatus,
    RolloutTenantStatus,
    halts_since,
)
from tenancy.settings import DownstreamService
from tenancy.status import DELETION_STATUSES, TenantStatus
from workflows.rollout.contracts import (
    BatchInput,
    BatchResult,
    RolloutStatusInput,
    RolloutStatusResult,
    WaveInput,
)

HEARTBEAT_INTERVAL = timedelta(seconds=2)
# How often a rollout looks whether a MOVING tenant it waits for is done moving.
MOVE_POLL = timedelta(milliseconds=500)
# What a rollout's tenant list says of a tenant whose calls wait for its move.
MOVING_REASON = "waiting: the tenant is MOVING"


class CallFailed(Exception):
    """A service's call failed for good for this tenant in this pass."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(reason)
        self.service = service
        self.reason = reason


@dataclass
class HaltTally:
    """The wave's counts as a batch sees them: those at its start plus its own results."""

    counts: RolloutCounts
    baseline: RolloutCounts | None
    max_failure_ratio: float | None

    def add(self, result: RolloutTenantStatus) -> None:
        """Count one tenant's result."""
        field = {
            RolloutTenantStatus.SUCCEEDED: "succeeded",
            RolloutTenantStatus.FAILED: "failed",
            RolloutTenantStatus.SKIPPED: "skipped",
        }[result]
        self.counts = self.counts.model_copy(update={field: getattr(self.counts, field) + 1})

    @property
    def halted(self) -> bool:
        """True once the wave's failures stop the rollout (never without a ratio: a batch
        scheduled by a run from before the rule was checked here)."""
        return self.max_failure_ratio is not None and halts_since(
            self.counts, self.baseline, self.max_failure_ratio
        )


@dataclass(frozen=True)
class Answer:
    """What one call of a service with transport events came to."""

    outcome: Outcome
    version: str = ""
    reason: str = ""


class RolloutActivities:
    """Bound to the rollout and tenant repositories, the storage fleet (to locate storage), the
    HTTP client and the signer of downstream calls."""

    def __init__(
        self,
        rollouts: RolloutRepository,
        tenants: TenantRepository,
        fleet: StorageFleet,
        http: httpx.AsyncClient,
        signer: CallSigner,
        services: Iterable[DownstreamService],
        commands: CommandChannel | None = None,
    ) -> None:
        self._commands = commands
        self._rollouts = rollouts
        self._tenants = tenants
        self._fleet = fleet
        self._http = http
        self._signer = signer
        self._services = {service.name: service for service in services}

    @activity.defn(name="run_rollout_batch")
    async def run_rollout_batch(self, request: BatchInput) -> BatchResult:
        """Claim the wave's next tenants and bring each to every selected service's newest
        version; a tenant that left the fleet (its deletion asked) is skipped."""
        claimed: list[Claimed] = []
        with metadata_failures("rollout batch"):
            # One batch of a rollout runs at a time: a row of the wave still RUNNING belongs
            # to an attempt that died (this batch's, before a retry) and goes back first.
            await self._rollouts.release(request.rollout_id, request.wave)
            status = await self._rollouts.status(request.rollout_id)
            at_start = RolloutCounts()
            if status is RolloutStatus.RUNNING:
                if request.max_failure_ratio is not None:
                    at_start = await self._rollouts.wave_counts(request.rollout_id, request.wave)
                claimed = await self._rollouts.claim(
                    request.rollout_id, request.wave, request.batch, request.limit
                )
            pass_number = await self._rollouts.pass_number(request.rollout_id)
        tally = HaltTally(at_start, request.halt_baseline, request.max_failure_ratio)
        slots = asyncio.Semaphore(request.concurrency)

        async def one(tenant: Claimed) -> None:
            async with slots:
                # A halt decided by the tenants finished so far, or a pause, halt or cancel
                # since the claim, starts no new tenant's calls (the row is handed back below);
                # a deletion asked since the claim skips the tenant.
                if tally.halted:
                    return
                with metadata_failures("rollout status"):
                    rollout, current, server = await self._rollouts.standing(
                        request.rollout_id, tenant.tenant_id
                    )
                    if current is TenantStatus.MOVING:
                        # Not while its storage moves; taken once the move is over, on the
                        # server it ended on.
                        if not await self._after_move(request, tenant.tenant_id):
                            return
                        rollout, current, server = await self._rollouts.standing(
                            request.rollout_id, tenant.tenant_id
                        )
                if rollout is not RolloutStatus.RUNNING or tally.halted:
                    return
                result = await self._tenant(
                    request,
                    replace(tenant, tenant_status=current, storage_server=server),
                    pass_number,
                )
                tally.add(result)

        tasks = [asyncio.create_task(one(tenant)) for tenant in claimed]
        try:
            # A steady heartbeat, not one per tenant: a tenant's calls may take minutes, a lost
            # worker must show in seconds.
            async with heartbeating(HEARTBEAT_INTERVAL):
                await asyncio.gather(*tasks)
        finally:
            # Also when the batch is cancelled (its worker shuts down) or one tenant's record
            # failed: the other calls stop, and a row without a result must not stay RUNNING.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
                with metadata_failures("rollout release"):
                    await asyncio.shield(
                        self._rollouts.release(
                            request.rollout_id, request.wave, [t.tenant_id for t in claimed]
                        )
                    )
        with metadata_failures("rollout counts"):
            counts = await self._rollouts.wave_counts(request.rollout_id, request.wave)
            status = await self._rollouts.status(request.rollout_id)
        return BatchResult(claimed=len(claimed), counts=counts, rollout_status=status)

    async def _after_move(self, request: BatchInput, tenant_id: str) -> bool:
        """Hand a MOVING tenant back (its move waits for claimed tenants' calls, so holding it
        would hold the move), wait until it is no longer MOVING, and claim it again; False when
        it was taken meanwhile or the rollout stopped running."""
        await self._rollouts.defer(request.rollout_id, tenant_id, MOVING_REASON)
        while True:
            rollout, current, _ = await self._rollouts.standing(request.rollout_id, tenant_id)
            if rollout is not RolloutStatus.RUNNING:
                return False
            if current is not TenantStatus.MOVING:
                return await self._rollouts.reclaim(request.rollout_id, tenant_id, request.batch)
            await asyncio.sleep(MOVE_POLL.total_seconds())

    async def _tenant(
        self, request: BatchInput, tenant: Claimed, pass_number: int
    ) -> RolloutTenantStatus:
        """The tenant's calls and its recorded result."""
        meter = activity.metric_meter()
        if tenant.tenant_status in DELETION_STATUSES:
            with metadata_failures("rollout result"):
                await self._rollouts.finish_tenant(
                    request.rollout_id, tenant.tenant_id, RolloutTenantStatus.SKIPPED
                )
            rollout_tenant_finished(meter, RolloutTenantStatus.SKIPPED.value)
            return RolloutTenantStatus.SKIPPED
        try:
            for name in request.services:
                await self._call(request, tenant, name, pass_number)
        except CallFailed as failed:
            with metadata_failures("rollout result"):
                await self._tenants.fleet_migration_failed(
                    tenant.tenant_id, failed.service, failed.reason
                )
                await self._rollouts.finish_tenant(
                    request.rollout_id,
                    tenant.tenant_id,
                    RolloutTenantStatus.FAILED,
                    failed.service,
                    failed.reason,
                )
            rollout_tenant_finished(meter, RolloutTenantStatus.FAILED.value)
            return RolloutTenantStatus.FAILED
        with metadata_failures("rollout result"):
            await self._rollouts.finish_tenant(
                request.rollout_id, tenant.tenant_id, RolloutTenantStatus.SUCCEEDED
            )
        rollout_tenant_finished(meter, RolloutTenantStatus.SUCCEEDED.value)
        return RolloutTenantStatus.SUCCEEDED

    async def _call(
        self, request: BatchInput, tenant: Claimed, name: str, pass_number: int
    ) -> None:
        """One service's migrate call for one tenant: retried in place while it is worth it,
        then recorded on the tenant's migration record."""
        service = self._services.get(name)
        if service is None:
            raise CallFailed(name, f"service {name!r} is not configured on this worker")
        if tenant.storage_server is None:
            raise CallFailed(name, "the tenant has no storage server")
        location = self._fleet.locate(
            tenant.storage_server, tenant.tenant_id, StorageMode(tenant.storage_mode)
        )
        key = f"rollout-{request.rollout_id}/pass-{pass_number}/{tenant.tenant_id}/{name}"
        policy = request.call
        reason = "no attempt made"
        for attempt in range(policy.max_attempts):
            if attempt:
                delay = policy.initial_interval.total_seconds() * 2 ** (attempt - 1)
                await asyncio.sleep(min(delay, 5.0))
            if service.over_events:
                answer = await self._command(tenant, name, location, key, policy.timeout)
                migration_attempt(activity.metric_meter(), name, answer.outcome.value)
                if answer.outcome is Outcome.SUCCESS:
                    await self._succeeded(tenant, name, answer.version)
                    return
                reason = answer.reason
                if answer.outcome is Outcome.REJECTED:
                    break
                continue
            try:
                response = await signed_call(
                    self._http,
                    self._signer,
                    service,
                    "POST",
                    f"/internal/tenants/{tenant.tenant_id}/migrate",
                    tenant_id=tenant.tenant_id,
                    location=location,
                    idempotency_key=key,
                    timeout=policy.timeout.total_seconds(),
                )
            except Unreachable as exc:
                migration_attempt(activity.metric_meter(), name, Outcome.RETRYABLE.value)
                reason = str(exc)
                continue
            outcome = classify_status(response.status_code)
            migration_attempt(activity.metric_meter(), name, outcome.value)
            if outcome is Outcome.SUCCESS:
                try:
                    version = str(response.json()["version"])
                except (ValueError, KeyError, TypeError):
                    raise CallFailed(
                        name, f"HTTP {response.status_code} without a version"
                    ) from None
                await self._succeeded(tenant, name, version)
                return
            reason = answer_reason(response)
            if outcome is Outcome.REJECTED:
                break
        raise CallFailed(name, summarize(reason))

    async def _succeeded(self, tenant: Claimed, name: str, version: str) -> None:
        with metadata_failures("migration record"):
            await self._tenants.fleet_migration_succeeded(
                tenant.tenant_id,
                name,
                version,
                workflow_actor(activity.info().workflow_id or "unknown"),
            )

    async def _command(
        self,
        tenant: Claimed,
        name: str,
        location: StorageLocation,
        key: str,
        timeout: timedelta,
    ) -> Answer:
        """One send of a MigrateTenant command, waited for in place: the batch heartbeats
        meanwhile, and its retry after a lost worker sends again under the same key."""
        assert self._commands is not None, "a worker with events services has a command channel"
        try:
            with metadata_failures("command record"):
                row = await self._commands.call(
                    CommandType.MIGRATE,
                    service=name,
                    tenant_id=tenant.tenant_id,
                    location=location,
                    idempotency_key=key,
                    timeout=timeout,
                )
        except (NoReply, BusUnavailable) as exc:
            return Answer(Outcome.RETRYABLE, reason=str(exc))
        if row.outcome == ReplyOutcome.SUCCEEDED:
            return Answer(Outcome.SUCCESS, version=row.version or "")
        if row.outcome == ReplyOutcome.REJECTED:
            return Answer(Outcome.REJECTED, reason=row.reason or "rejected")
        return Answer(Outcome.RETRYABLE, reason=row.reason or "failed")

    @activity.defn(name="set_rollout_status")
    async def set_rollout_status(self, request: RolloutStatusInput) -> RolloutStatusResult:
        """Move the rollout to `target` if its status allows it (a concurrent operator's pause
        or cancel wins: the change is then reported as not applied)."""
        action = _ACTIONS.get(request.target)
        with metadata_failures("rollout status"):
            try:
                status = await self._rollouts.change_status(
                    request.rollout_id, request.target, request.actor, action, request.reason
                )
            except RolloutStateRefused as refused:
                return RolloutStatusResult(status=refused.current, applied=False)
        return RolloutStatusResult(status=status, applied=True)

    @activity.defn(name="set_wave_status")
    async def set_wave_status(self, request: WaveInput) -> None:
        """Record where a wave stands."""
        with metadata_failures("wave status"):
            await self._rollouts.set_wave(request.rollout_id, request.wave, request.status)


# The audit event of each status change.
_ACTIONS = {
    RolloutStatus.PAUSED: RolloutAction.PAUSED,
    RolloutStatus.HALTED: RolloutAction.HALTED,
    RolloutStatus.SUCCEEDED: RolloutAction.FINISHED,
    RolloutStatus.FAILED: RolloutAction.FINISHED,
    RolloutStatus.CANCELLED: RolloutAction.CANCELLED,
    RolloutStatus.RUNNING: RolloutAction.RESUMED,
}
