"""`ProvisionTenantWorkflow`: record metadata -> create storage -> migrate every service.

The workflow owns the status machine. The tenant row in PostgreSQL follows it through
guarded transitions; the `TenantStatus` search attribute follows it after each one.

A run may adopt the tenant from a closed run of the same workflow id (`ProvisionInput.adopt`:
retry-provisioning, retry-migration of a closed run, the reconciler, continue-as-new): it takes
the row over by compare-and-set on the owning run and skips what is already done. A run waiting
in MIGRATION_ERROR continues as new when Temporal suggests it, so its history stays bounded.
Cancellation is not failure: the run records where it stopped and ends cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from activities.metadata import MetadataActivities
    from activities.migrations import MigrationActivities
    from activities.storage import StorageActivities
    from infra import search_attributes as sa
    from infra.telemetry import metrics
    from tenancy.contracts import (
        AdoptRun,
        ClaimTenantInput,
        CreateStorageInput,
        MigrateInput,
        MigrationFailedInput,
        PlanInput,
        ProvisioningPlan,
    )
    from tenancy.failures import FailureType
    from tenancy.models import Tenant
    from tenancy.naming import workflow_actor
    from tenancy.status import MigrationStatus, TenantStatus
    from workflows.common import (
        ActivityOptions,
        failure_reason,
        follow_status,
        is_final,
        local_attempt,
        never_started,
        record_retry_request,
        run_activity,
        transition_tenant,
        was_declined,
    )
    from workflows.provision import options
    from workflows.provision.contracts import (
        RECORDED_UPDATE,
        RETRY_SIGNAL,
        RETRY_UPDATE,
        STATUS_QUERY,
        WORKFLOW_NAME,
        ProvisionInput,
        ProvisionState,
        ResumeState,
        RetryDecision,
        RetryRequest,
        ServiceState,
    )

# One patch for issue 9's changes to the run's history: adoption, continue-as-new, cancellation
# and the TenantStatus search attribute written only once the run owns the row.
RECOVERABLE_RUNS_PATCH = "recoverable-runs"
# The lean history (issue 20): one patch marker instead of one per change (each marker also
# upserts TemporalChangeVersion, a visibility write); the plan and the row in one local
# activity; the identity search attributes set at start; the first attempt of storage and of
# each migration made locally, in the workflow task (`_attempt`); storage moving the tenant to
# MIGRATING, and the last successful migration to ACTIVE, in their own attempts. A healthy
# tenant is provisioned in one workflow task. Runs that took it take every earlier patch's
# path without asking.
LEAN_HISTORY_PATCH = "lean-history"
# The shortest timer: ends the current workflow task, so what it answered is sent.
_FLUSH = timedelta(milliseconds=1)
# Where a cancelled run leaves a tenant it owned: an error status with a way out.
_CANCELLED_TO = {
    TenantStatus.PROVISIONING: TenantStatus.PROVISION_ERROR,
    TenantStatus.MIGRATING: TenantStatus.MIGRATION_ERROR,
}
# Statuses that end a provisioning pass, each counted in `platform_provisions_finished`.
_OUTCOMES = {
    TenantStatus.ACTIVE: metrics.ProvisionResult.ACTIVE,
    TenantStatus.PROVISION_ERROR: metrics.ProvisionResult.PROVISION_ERROR,
    TenantStatus.MIGRATION_ERROR: metrics.ProvisionResult.MIGRATION_ERROR,
}


def _failure_type(value: str | None) -> FailureType:
    """The activity's own failure type, or the generic provisioning failure."""
    known = {member.value for member in FailureType}
    return FailureType(value) if value in known else FailureType.PROVISION_FAILED


ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Step:
    """One link of the provisioning chain. A step added after release names a patch id,
    so runs already in flight (whose history lacks it) skip it on replay."""

    name: str
    run: Callable[[ProvisionTenantWorkflow], Awaitable[None]]
    patch_id: str | None = None


@workflow.defn(name=WORKFLOW_NAME)
class ProvisionTenantWorkflow:
    """Provisions one tenant; in MIGRATION_ERROR it waits for `retry_migration`."""

    @workflow.init
    def __init__(self, request: ProvisionInput) -> None:
        self._spec = request.spec
        self._requested_by = request.requested_by
        self._adopt = request.adopt
        self._resume = request.resume
        self._state = ProvisionState(tenant_id=request.spec.id, status=TenantStatus.PROVISIONING)
        if request.resume is not None:
            self._state.status = request.resume.status
            self._state.reason = request.resume.reason
            self._state.storage = request.resume.storage
            self._state.retry_cycle = request.resume.retry_cycle
            # Known from the first task on, so a query never sees a continued run half-built.
            self._state.services = dict(request.resume.services)
        self._plan: ProvisioningPlan | None = None
        self._rejection: str | None = None
        self._rejection_type = FailureType.TENANT_EXISTS
        self._retry_requested = False
        self._retry_reason = "retry_migration signal"
        self._awaiting_retry = False
        self._retry_claimed = False
        self._local_metadata = False
        self._recoverable = False
        self._lean = False
        # A client waits for `tenant_recorded` (update-with-start: adoptions, retries).
        self._record_awaited = False
        # A migration call of this pass moved the tenant to ACTIVE (`MigrateInput.activate`).
        self._activated = False
        # The lean history's TenantStatus not upserted yet (`_show_later`).
        self._status_to_show: TenantStatus | None = None
        # Why a service's last call never started: no worker took it from its queue.
        self._unpolled: dict[str, str] = {}

    @workflow.run
    async def run(self, request: ProvisionInput) -> ProvisionState:
        """Walk the chain; the result is the final state (ACTIVE)."""
        self._lean = workflow.patched(LEAN_HISTORY_PATCH)
        if self._lean:
            self._recoverable = self._local_metadata = True
            if self._adopt is None:
                metrics.provision_started(workflow.metric_meter(), self._spec)
        else:
            await self._begin()
        try:
            for step in PROVISION_CHAIN:
                if step.patch_id is not None and not workflow.patched(step.patch_id):
                    continue
                await step.run(self)
        except (asyncio.CancelledError, FailureError) as err:
            if not self._is_cancellation(err):
                raise
            await self._record_cancellation()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _begin(self) -> None:
        """How runs before the lean history begin: their patches, search attributes and plan."""
        self._recoverable = workflow.patched(RECOVERABLE_RUNS_PATCH)
        if self._recoverable:
            # TenantStatus is written once this run owns the row (`_record_metadata`): until
            # then the row may belong to another run and say something else.
            workflow.upsert_search_attributes(
                [
                    sa.TENANT_ID.value_set(self._spec.id),
                    sa.SLA_TIER.value_set(self._spec.sla_tier.value),
                    sa.STORAGE_MODE.value_set(self._spec.storage_mode.value),
                ]
            )
        else:
            workflow.upsert_search_attributes(
                [
                    sa.TENANT_ID.value_set(self._spec.id),
                    sa.TENANT_STATUS.value_set(self._state.status.value),
                    sa.SLA_TIER.value_set(self._spec.sla_tier.value),
                    sa.STORAGE_MODE.value_set(self._spec.storage_mode.value),
                ]
            )
        if self._adopt is None:
            metrics.provision_started(workflow.metric_meter(), self._spec)
        # Runs started before the patch keep scheduling metadata writes as regular activities.
        self._local_metadata = workflow.patched(options.LOCAL_METADATA_PATCH)
        self._take_plan(
            await run_activity(MetadataActivities.load_plan, PlanInput(), options.LOAD_PLAN)
        )

    def _take_plan(self, plan: ProvisioningPlan) -> None:
        self._plan = plan
        carried = self._resume.services if self._resume is not None else {}
        self._state.services = {name: carried.get(name, ServiceState()) for name in plan.services}

    @workflow.query(name=STATUS_QUERY)
    def get_status(self) -> ProvisionState:
        """The live state: status, storage and each service's migration."""
        return self._state

    @workflow.signal(name=RETRY_SIGNAL)
    def retry_migration(self) -> None:
        """Re-run the services that have not succeeded; ignored outside MIGRATION_ERROR.
        Signals that arrive before the retry starts are coalesced into one retry."""
        if self._state.status is TenantStatus.MIGRATION_ERROR:
            self._retry_requested = True
        else:
            workflow.logger.info("retry_migration ignored in status %s", self._state.status)

    @workflow.update(name=RETRY_UPDATE)
    async def request_retry(self, request: RetryRequest) -> RetryDecision:
        """Like `retry_migration`, but answers whether this request started the retry: of any
        number of concurrent requests exactly one does, and its RETRY_REQUESTED event is
        written before the services are called again."""
        if not self._awaiting_retry or self._retry_requested or self._retry_claimed:
            return RetryDecision(accepted=False, status=self._state.status)
        self._retry_claimed = True
        try:
            await record_retry_request(
                self._spec.id,
                request.requested_by,
                "retry-migration",
                self._state.retry_cycle,
                options.RECORD_EVENT,
            )
        finally:
            self._retry_claimed = False
        self._retry_requested = True
        self._retry_reason = f"retry requested by {request.requested_by}"
        return RetryDecision(accepted=True, status=self._state.status)

    @workflow.update(name=RECORDED_UPDATE)
    async def tenant_recorded(self) -> ProvisionState:
        """Completes once the tenant row exists, so the API never answers 202 before it."""
        self._record_awaited = True
        await workflow.wait_condition(lambda: self._state.recorded or self._rejection is not None)
        if self._rejection is not None:
            raise ApplicationError(self._rejection, type=self._rejection_type)
        return self._state

    def _metadata(self, opts: options.ActivityOptions) -> options.ActivityOptions:
        """Local for runs that took the patch, regular for runs started before it."""
        return opts if self._local_metadata else options.as_regular(opts)

    def _is_cancellation(self, err: BaseException) -> bool:
        # Before the patch, a cancelled activity was handled as a failed one.
        return self._recoverable and is_cancelled_exception(err)

    def _step_failed(self, err: FailureError) -> bool:
        """True for an activity's own failure, which the step handles; False for what must
        propagate (a cancellation). A local activity that fails non-retryably surfaces as
        its bare ApplicationError rather than an ActivityError; runs before the patch
        let that fail the workflow."""
        if self._is_cancellation(err):
            return False
        return isinstance(err, ActivityError) or self._recoverable

    async def _claim(self) -> Tenant:
        """The row this run owns (inserted, found, or adopted), and the plan with it."""
        info = workflow.info()
        claim = ClaimTenantInput(
            spec=self._spec,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            created_by=self._requested_by,
            adopt=self._adopt,
        )
        if self._lean:
            claimed = await run_activity(
                MetadataActivities.claim_tenant, claim, options.RECORD_TENANT
            )
            self._take_plan(claimed.plan)
            return claimed.tenant
        assert self._plan is not None
        return await run_activity(
            MetadataActivities.record_tenant,
            claim.recording(self._plan.services),
            self._metadata(options.RECORD_TENANT),
        )

    async def _record_metadata(self) -> None:
        try:
            tenant = await self._claim()
        except FailureError as err:
            if not self._step_failed(err):
                raise
            self._rejection = failure_reason(err)
            cause = err.cause if isinstance(err, ActivityError) else err
            if self._recoverable and isinstance(cause, ApplicationError):
                self._rejection_type = _failure_type(cause.type)
            metrics.provision_finished(
                workflow.metric_meter(), self._spec, metrics.ProvisionResult.REJECTED
            )
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                self._rejection, type=self._rejection_type, non_retryable=True
            ) from err
        self._state.recorded = True
        if self._recoverable:
            self._adopt_row(tenant)
        if self._lean and self._record_awaited:
            # The answer leaves with this workflow task's completion, which local attempts
            # would hold back until storage and migrations are done: end the task first.
            self._show_pending()
            await workflow.sleep(_FLUSH)

    def _adopt_row(self, tenant: Tenant) -> None:
        """Start from what the row says: its status, and the services already migrated."""
        if self._resume is None:
            self._state.status = tenant.status
            self._state.reason = tenant.status_reason
        for record in tenant.migrations:
            if (
                record.status is MigrationStatus.SUCCEEDED
                and record.service in self._state.services
            ):
                self._state.services[record.service] = ServiceState(
                    status=MigrationStatus.SUCCEEDED, version=record.version
                )
        if self._lean and workflow.info().typed_search_attributes.get(sa.TENANT_ID) is not None:
            self._show_later(self._state.status)
            return
        updates = [sa.TENANT_STATUS.value_set(self._state.status.value)]
        if self._lean:
            # Started without them (a client older than the lean history): set them here.
            updates += [
                sa.TENANT_ID.value_set(self._spec.id),
                sa.SLA_TIER.value_set(self._spec.sla_tier.value),
                sa.STORAGE_MODE.value_set(self._spec.storage_mode.value),
            ]
        workflow.upsert_search_attributes(updates)

    async def _create_storage(self) -> None:
        if self._resume is not None:
            return
        # The lean history's storage step records MIGRATING itself, in the same attempt.
        then = TenantStatus.MIGRATING if self._lean else None
        try:
            self._state.storage = await self._attempt(
                StorageActivities.create_storage,
                CreateStorageInput(
                    tenant_id=self._spec.id, mode=self._spec.storage_mode, then_status=then
                ),
                options.CREATE_STORAGE,
            )
        except FailureError as err:
            if not self._step_failed(err):
                raise
            reason = failure_reason(err)
            await self._set_status(TenantStatus.PROVISION_ERROR, reason)
            raise ApplicationError(
                f"storage for tenant {self._spec.id} failed: {reason}",
                type=FailureType.PROVISION_FAILED,
                non_retryable=True,
            ) from err
        if self._lean:
            self._follow_status(TenantStatus.MIGRATING)
        else:
            await self._set_status(TenantStatus.MIGRATING)

    async def _migrate_services(self) -> None:
        if self._resume is not None and self._resume.status is TenantStatus.MIGRATION_ERROR:
            await self._await_retry()
        while True:
            pending = [
                name
                for name, service in self._state.services.items()
                if service.status is not MigrationStatus.SUCCEEDED
            ]
            self._activated = False
            outcomes = await asyncio.gather(*(self._migrate(name) for name in pending))
            failed = [name for name, ok in zip(pending, outcomes, strict=True) if not ok]
            if not failed:
                if self._activated:
                    self._follow_status(TenantStatus.ACTIVE)
                else:
                    await self._set_status(TenantStatus.ACTIVE)
                return
            # Armed before the status changes, so a signal sent as soon as the row reads
            # MIGRATION_ERROR is never dropped.
            self._retry_requested = False
            await self._set_status(TenantStatus.MIGRATION_ERROR, self._failure_summary(failed))
            await self._await_retry()

    def _failure_summary(self, failed: list[str]) -> str:
        """The MIGRATION_ERROR reason: the failed services, and the queue of each call that no
        worker took (a deploy to finish before retrying)."""
        reason = f"migration failed for: {', '.join(failed)}"
        unpolled = [f"{name}: {self._unpolled[name]}" for name in failed if name in self._unpolled]
        return f"{reason} ({'; '.join(unpolled)})" if unpolled else reason

    async def _await_retry(self) -> None:
        """Wait in MIGRATION_ERROR for a retry; continue as new while the wait grows long."""
        self._show_pending()
        self._awaiting_retry = True
        while True:
            await workflow.wait_condition(
                lambda: self._retry_requested or self._continue_as_new_suggested()
            )
            if self._retry_requested:
                break
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._retry_requested:
                workflow.continue_as_new(self._continuation())
        self._awaiting_retry = False
        self._state.retry_cycle += 1
        await self._set_status(TenantStatus.MIGRATING, self._retry_reason)
        self._retry_reason = "retry_migration signal"

    def _continue_as_new_suggested(self) -> bool:
        return self._recoverable and workflow.info().is_continue_as_new_suggested()

    def _continuation(self) -> ProvisionInput:
        """The next run's input: this run's state, so it skips what is done."""
        info = workflow.info()
        assert self._state.storage is not None
        return ProvisionInput(
            spec=self._spec,
            requested_by=self._requested_by,
            adopt=AdoptRun(
                replaces_run_id=info.run_id,
                actor=workflow_actor(info.workflow_id),
                reason="continue-as-new",
            ),
            resume=ResumeState(
                status=self._state.status,
                reason=self._state.reason,
                storage=self._state.storage,
                services=self._state.services,
                retry_cycle=self._state.retry_cycle,
            ),
        )

    async def _record_cancellation(self) -> None:
        """Leave the tenant in a definite state with a way out: a run cancelled while
        provisioning or migrating moves it to the matching error status (retry-provisioning
        or retry-migration start a new run); MIGRATION_ERROR stays as it is."""
        self._show_pending()
        if self._rejection is None and not self._state.recorded:
            self._rejection = "provisioning was cancelled"
            self._rejection_type = FailureType.PROVISION_CANCELLED
        target = _CANCELLED_TO.get(self._state.status)
        if not self._state.recorded or target is None:
            return
        try:
            await self._set_status(target, "provisioning run cancelled")
        except FailureError as err:
            workflow.logger.warning("could not record the cancellation: %s", failure_reason(err))

    async def _migrate(self, service: str) -> bool:
        assert self._plan is not None
        assert self._state.storage is not None
        info = workflow.info()
        self._state.services[service] = ServiceState(status=MigrationStatus.RUNNING)
        request = MigrateInput(
            tenant_id=self._spec.id,
            service=service,
            location=self._state.storage,
            # One key per logical call: every retry of this cycle's call carries the same one.
            idempotency_key=f"{info.workflow_id}/{info.run_id}/{service}/{self._state.retry_cycle}",
            timeout=self._plan.migration_retry.timeout,
            max_attempts=self._plan.migration_retry.max_attempts,
            activate=self._lean,
        )
        # Runs started before per-service queues keep their calls on the workflow's queue.
        per_service = self._lean or workflow.patched(options.PER_SERVICE_QUEUES_PATCH)
        task_queue = options.migration_task_queue(info.task_queue, service) if per_service else None
        # Only a service's own queue can be unpolled while the run's queue is not: a deploy
        # that dropped the service, or workers older than the per-service queues.
        bounded = per_service and (self._lean or workflow.patched(options.SCHEDULE_TO_START_PATCH))
        retry = self._plan.migration_retry
        self._unpolled.pop(service, None)
        try:
            result = await self._attempt(
                MigrationActivities.migrate_service,
                request,
                options.migrate_service_options(retry, task_queue, bounded_wait=bounded),
            )
        except FailureError as err:
            if not self._step_failed(err):
                raise
            reason = failure_reason(err)
            if never_started(err) and retry.schedule_to_start is not None:
                reason = (
                    f"no worker took the call from task queue {task_queue} within "
                    f"{retry.schedule_to_start.total_seconds():g} s"
                )
                self._unpolled[service] = reason
            self._state.services[service] = ServiceState(
                status=MigrationStatus.FAILED, error=reason
            )
            await run_activity(
                MetadataActivities.mark_migration_failed,
                MigrationFailedInput(tenant_id=self._spec.id, service=service, error=reason),
                self._metadata(options.MARK_MIGRATION_FAILED),
            )
            return False
        self._state.services[service] = ServiceState(
            status=MigrationStatus.SUCCEEDED, version=result.version
        )
        self._activated = self._activated or result.activated
        return True

    async def _attempt(
        self,
        method: Callable[[Any, ArgT], Awaitable[ResultT]],
        arg: ArgT,
        opts: ActivityOptions,
    ) -> ResultT:
        """Run a storage or migration step. The lean history makes its first attempt locally,
        in this workflow task (the common case: done with no task-queue round trip and no
        task of its own). A failure that a retry could fix, or a timeout, hands the call to
        the regular activity after the retry policy's first backoff (the local attempt was the
        first attempt); a worker that declines (no free slot here) hands it over at once. The
        regular activity then has its queue, retry policy and slots, as before; the call is
        idempotent either way."""
        # A retry (retry-migration) goes to the queues: it arrives as an update or a signal,
        # and a workflow task that fails under a burst of those would make a local attempt
        # again, which would count against the service's budget again.
        if not self._lean or self._state.retry_cycle > 0:
            return await run_activity(method, arg, opts)
        try:
            return await run_activity(method, arg, local_attempt(opts))
        except FailureError as err:
            if self._is_cancellation(err) or is_final(err, opts):
                raise
            # The run leaves this workflow task now: what it shows must be current.
            self._show_pending()
            if not was_declined(err):
                # The local attempt was the first attempt: the policy's first backoff comes
                # before the regular activity's attempts (declined, it goes at once).
                await workflow.sleep(opts.retry.initial_interval or _FLUSH)
        return await run_activity(method, arg, opts)

    async def _set_status(self, target: TenantStatus, reason: str | None = None) -> None:
        self._state.status = target
        self._state.reason = reason
        # The transition shows `target` itself, superseding a status not shown yet.
        self._status_to_show = None
        await transition_tenant(
            self._spec.id, target, reason, self._metadata(options.TRANSITION_STATUS)
        )
        self._count_outcome(target)

    def _follow_status(self, target: TenantStatus) -> None:
        """An activity moved the row to `target`: follow it in the state, the search attribute
        and the log, as `_set_status` does after its own transition. A status the run goes on
        from within this task (MIGRATING) is shown when the task ends (`_show_later`)."""
        self._state.status = target
        self._state.reason = None
        if target is TenantStatus.MIGRATING:
            self._show_later(target)
            workflow.logger.info("tenant %s is %s", self._spec.id, target.value)
        else:
            self._status_to_show = None
            follow_status(self._spec.id, target, None)
        self._count_outcome(target)

    def _show_later(self, target: TenantStatus) -> None:
        """The lean history's intermediate statuses (PROVISIONING once the row is owned,
        MIGRATING once storage is made): a healthy tenant passes both within its one workflow
        task, where each upsert would cost an event and a visibility write only to be
        overwritten by ACTIVE in the same task. So `TenantStatus` is upserted when the run
        leaves the task (`_show_pending`: a regular activity, a timer) or by the next status
        change: it may lag the row by the time of one local attempt (the row, which the API
        reads, never lags)."""
        self._status_to_show = target

    def _show_pending(self) -> None:
        if self._status_to_show is not None:
            workflow.upsert_search_attributes(
                [sa.TENANT_STATUS.value_set(self._status_to_show.value)]
            )
            self._status_to_show = None

    def _count_outcome(self, target: TenantStatus) -> None:
        outcome = _OUTCOMES.get(target)
        if outcome is not None:
            metrics.provision_finished(
                workflow.metric_meter(),
                self._spec,
                outcome,
                # Replay-safe clock: both times come from history.
                workflow.now() - workflow.info().start_time
                if outcome is metrics.ProvisionResult.ACTIVE
                else None,
            )


PROVISION_CHAIN: tuple[Step, ...] = (
    Step("record_metadata", ProvisionTenantWorkflow._record_metadata),
    Step("create_storage", ProvisionTenantWorkflow._create_storage),
    Step("migrate_services", ProvisionTenantWorkflow._migrate_services),
)
