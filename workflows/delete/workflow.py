"""`DeleteTenantWorkflow`: stop provisioning -> schedule -> grace period -> purge -> DELETED.

The purge is backup (when a backup folder is configured) -> every service's teardown, in
parallel -> drop the storage and check it is gone -> DELETED. Nothing is dropped before the grace
period is over and the backup is recorded. A failed step leaves the tenant in DELETION_ERROR with
the reason per step and per service, and the run waits for a retry, which resumes from the failed
step (steps done are remembered in the run and on the row, so a new run skips them too).

During the grace period (a durable timer) `cancel_deletion` restores the tenant to the status it
had before, and the run ends. Cancellation is not failure: a purge cancelled midway is recorded
as DELETION_ERROR (retry-deletion resumes it); a cancelled grace period leaves the tenant
DELETION_SCHEDULED, which the reconciler resumes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from activities.deletion import DeletionActivities
    from activities.metadata import MetadataActivities
    from infra import search_attributes as sa
    from infra.telemetry import metrics
    from tenancy.contracts import (
        BackupInput,
        DeletionProgressResult,
        DropStorageInput,
        LoadDeletionInput,
        PlanInput,
        ProvisioningPlan,
        RestoreInput,
        ScheduleDeletionInput,
        StopProvisioningInput,
        TeardownInput,
    )
    from tenancy.failures import FailureType
    from tenancy.models import StorageMode
    from tenancy.naming import workflow_actor
    from tenancy.status import DELETION_STATUSES, TenantStatus
    from workflows.common import (
        failure_reason,
        record_retry_request,
        run_activity,
        transition_tenant,
    )
    from workflows.delete import options
    from workflows.delete.contracts import (
        CANCEL_SIGNAL,
        RETRY_SIGNAL,
        RETRY_UPDATE,
        SCHEDULED_UPDATE,
        STATUS_QUERY,
        WORKFLOW_NAME,
        CancelDeletion,
        DeleteInput,
        DeletionState,
        ResumeDeletion,
    )
    from workflows.provision.contracts import RetryDecision, RetryRequest

DONE = "DONE"
# Runs that find, at the end of their grace period, the tenant restored by the API.
RESTORED_BEFORE_PURGE_PATCH = "deletion-restored-before-purge"


class StepFailed(Exception):
    """A purge step failed for good; the tenant goes to DELETION_ERROR with `reason`."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step = step
        self.reason = f"{step} failed: {reason}"


@workflow.defn(name=WORKFLOW_NAME)
class DeleteTenantWorkflow:
    """Deletes one tenant after its grace period; waits in DELETION_ERROR for a retry."""

    @workflow.init
    def __init__(self, request: DeleteInput) -> None:
        self._request = request
        self._state = DeletionState(tenant_id=request.tenant_id)
        self._mode: StorageMode | None = None
        self._plan: ProvisioningPlan | None = None
        self._rejection: str | None = None
        self._rejection_type = FailureType.DELETION_CONFLICT
        self._restore: CancelDeletion | None = None
        self._retry_requested = request.resume is not None and request.resume.retry
        self._awaiting_retry = False
        self._retry_claimed = False
        self._retry_reason = (
            f"retry requested by {request.resume.actor}"
            if request.resume is not None and request.resume.retry
            else "retry_deletion signal"
        )

    @workflow.run
    async def run(self, request: DeleteInput) -> DeletionState:
        """Schedule (or take over) the deletion, wait out the grace period, purge."""
        workflow.upsert_search_attributes([sa.TENANT_ID.value_set(request.tenant_id)])
        self._plan = await run_activity(
            MetadataActivities.load_plan, PlanInput(), options.LOAD_PLAN
        )
        try:
            if request.resume is None:
                await self._schedule()
            else:
                await self._take_over(request.resume)
                if self._state.status not in DELETION_STATUSES:
                    # Restored meanwhile: nothing to take over.
                    return self._state
            if self._state.status is TenantStatus.DELETION_SCHEDULED:
                if await self._grace_period():
                    return self._state
            elif self._state.status is TenantStatus.DELETION_ERROR:
                await self._await_retry()
            if self._state.status is not TenantStatus.DELETED:
                await self._purge_until_done()
        except (asyncio.CancelledError, FailureError) as err:
            if not is_cancelled_exception(err):
                raise
            await self._record_cancellation()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.query(name=STATUS_QUERY)
    def get_status(self) -> DeletionState:
        """The live state: status, times, backup and each service's teardown."""
        return self._state

    @workflow.update(name=SCHEDULED_UPDATE)
    async def deletion_scheduled(self) -> DeletionState:
        """Completes once the deletion is recorded (DELETION_SCHEDULED), so the API answers 202
        with the request on the row; fails when the deletion was refused."""
        await workflow.wait_condition(lambda: self._state.scheduled or self._rejection is not None)
        if self._rejection is not None:
            raise ApplicationError(self._rejection, type=self._rejection_type)
        return self._state

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel_deletion(self, request: CancelDeletion | None = None) -> None:
        """Restore: ends the grace period with the tenant back where it was; ignored once the
        purge has started."""
        if self._state.status is TenantStatus.DELETION_SCHEDULED or not self._state.scheduled:
            self._restore = request or CancelDeletion()
        else:
            workflow.logger.info("cancel_deletion ignored in status %s", self._state.status)

    @workflow.signal(name=RETRY_SIGNAL)
    def retry_deletion(self) -> None:
        """Resume a failed purge from its failed step; ignored outside DELETION_ERROR."""
        # A run taking a deletion over (repair, continue-as-new) does not know its status until
        # it has read the row; a retry sent meanwhile was meant for the DELETION_ERROR it takes
        # over, and is kept (a purge that fails again clears it before waiting).
        taking_over = self._request.resume is not None and not self._state.scheduled
        if self._state.status is TenantStatus.DELETION_ERROR or taking_over:
            self._retry_requested = True
        else:
            workflow.logger.info("retry_deletion ignored in status %s", self._state.status)

    @workflow.update(name=RETRY_UPDATE)
    async def request_retry(self, request: RetryRequest) -> RetryDecision:
        """Like `retry_deletion`, but answers whether this request started the retry (exactly
        one of concurrent requests does), its RETRY_REQUESTED event written first. A run still
        reading the row it takes over answers once it knows the status."""
        await workflow.wait_condition(lambda: self._state.scheduled or self._rejection is not None)
        status = self._state.status or TenantStatus.DELETION_SCHEDULED
        if not self._awaiting_retry or self._retry_requested or self._retry_claimed:
            return RetryDecision(accepted=False, status=status)
        self._retry_claimed = True
        try:
            await record_retry_request(
                self._request.tenant_id,
                request.requested_by,
                "retry-deletion",
                self._state.retry_cycle,
                options.RECORD_EVENT,
            )
        finally:
            self._retry_claimed = False
        self._retry_requested = True
        self._retry_reason = f"retry requested by {request.requested_by}"
        return RetryDecision(accepted=True, status=status)

    async def _schedule(self) -> None:
        """Stop the tenant's provisioning run, then record the request (DELETION_SCHEDULED)."""
        tenant_id = self._request.tenant_id
        await run_activity(
            DeletionActivities.stop_provisioning,
            StopProvisioningInput(tenant_id=tenant_id),
            options.STOP_PROVISIONING,
        )
        requested_at = workflow.now()
        purge_at = requested_at + timedelta(seconds=self._request.grace_seconds)
        try:
            await run_activity(
                DeletionActivities.schedule_deletion,
                ScheduleDeletionInput(
                    tenant_id=tenant_id,
                    requested_by=self._request.requested_by,
                    reason=self._request.reason,
                    requested_at=requested_at,
                    purge_at=purge_at,
                ),
                options.SCHEDULE,
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            cause = err.cause if isinstance(err, ActivityError) else err
            self._rejection = failure_reason(err)
            if isinstance(cause, ApplicationError) and cause.type:
                known = {member.value for member in FailureType}
                if cause.type in known:
                    self._rejection_type = FailureType(cause.type)
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                self._rejection, type=self._rejection_type, non_retryable=True
            ) from err
        progress = await self._load()
        self._state.scheduled = True
        self._state.status = TenantStatus.DELETION_SCHEDULED
        self._state.requested_at = progress.requested_at or requested_at
        self._state.purge_at = progress.purge_at or purge_at
        workflow.upsert_search_attributes(
            [sa.TENANT_STATUS.value_set(TenantStatus.DELETION_SCHEDULED.value)]
        )

    async def _take_over(self, resume: ResumeDeletion) -> None:
        """Carry on a deletion recorded on the row: its times, backup and services done."""
        progress = await self._load()
        self._state.scheduled = True
        self._state.status = progress.status
        self._state.requested_at = progress.requested_at
        self._state.purge_at = progress.purge_at
        self._state.backup = progress.backup
        workflow.upsert_search_attributes([sa.TENANT_STATUS.value_set(progress.status.value)])
        workflow.logger.info(
            "deletion of %s taken over by %s in %s",
            self._request.tenant_id,
            resume.actor,
            progress.status.value,
        )

    async def _load(self) -> DeletionProgressResult:
        progress = await run_activity(
            DeletionActivities.load_deletion,
            LoadDeletionInput(tenant_id=self._request.tenant_id),
            options.LOAD,
        )
        self._mode = progress.storage_mode
        assert self._plan is not None
        for service in self._plan.services:
            if service in progress.torn_down:
                self._state.services[service] = DONE
        return progress

    async def _grace_period(self) -> bool:
        """Wait until the purge time or a restore; True when the tenant was restored."""
        purge_at = self._state.purge_at or workflow.now()
        remaining = max((purge_at - workflow.now()).total_seconds(), 0.0)
        try:
            await workflow.wait_condition(
                lambda: self._restore is not None, timeout=timedelta(seconds=remaining)
            )
        except TimeoutError:
            return False
        assert self._restore is not None
        result = await run_activity(
            DeletionActivities.restore_tenant,
            RestoreInput(
                tenant_id=self._request.tenant_id,
                actor=self._restore.requested_by,
                reason=self._restore.reason,
                requested_at=self._state.requested_at,
            ),
            options.RESTORE,
        )
        self._state.status = result.status
        self._state.reason = "restored"
        workflow.upsert_search_attributes([sa.TENANT_STATUS.value_set(result.status.value)])
        self._finished(metrics.DeletionResult.RESTORED)
        return True

    async def _purge_until_done(self) -> None:
        while True:
            try:
                await self._purge()
                return
            except StepFailed as failed:
                self._retry_requested = False
                self._state.failed_step = failed.step
                await self._set_status(TenantStatus.DELETION_ERROR, failed.reason)
                self._finished(metrics.DeletionResult.DELETION_ERROR)
                await self._await_retry()

    async def _purge(self) -> None:
        if not await self._start_purge():
            return
        if self._state.backup is None:
            await self._backup()
        await self._teardown()
        await self._drop()
        await self._set_status(TenantStatus.DELETED)
        requested_at = self._state.requested_at
        self._finished(
            metrics.DeletionResult.DELETED,
            workflow.now() - requested_at if requested_at is not None else None,
        )

    async def _start_purge(self) -> bool:
        """DELETING; False when a restore the run heard of only after its grace period ended
        (the API writes a restore, then signals: the signal can come late, or not at all) took
        the tenant out of its deletion first: the run then ends as restored, touching nothing."""
        scheduled = self._state.status is TenantStatus.DELETION_SCHEDULED
        try:
            await self._set_status(TenantStatus.DELETING, self._purge_reason())
        except FailureError as err:
            # A local activity's failure arrives as its own ApplicationError.
            cause = err.cause if isinstance(err, ActivityError) else err
            refused = (
                isinstance(cause, ApplicationError) and cause.type == FailureType.ILLEGAL_TRANSITION
            )
            # Only this path changes the history, so only it asks for the patch.
            if not (scheduled and refused and workflow.patched(RESTORED_BEFORE_PURGE_PATCH)):
                raise
            progress = await self._load()
            if progress.status in DELETION_STATUSES:
                raise
            self._state.status = progress.status
            self._state.reason = "restored"
            workflow.upsert_search_attributes([sa.TENANT_STATUS.value_set(progress.status.value)])
            self._finished(metrics.DeletionResult.RESTORED)
            return False
        return True

    def _purge_reason(self) -> str:
        if self._state.retry_cycle:
            return self._retry_reason
        return "grace period over"

    def _label(self) -> str:
        requested_at = self._state.requested_at or workflow.now()
        return f"tenant-{self._request.tenant_id}-{requested_at:%Y%m%dT%H%M%SZ}"

    async def _backup(self) -> None:
        assert self._mode is not None
        try:
            result = await run_activity(
                DeletionActivities.backup_storage,
                BackupInput(
                    tenant_id=self._request.tenant_id, mode=self._mode, label=self._label()
                ),
                options.BACKUP,
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            raise StepFailed("backup", failure_reason(err)) from err
        self._state.backup = result.backup

    async def _teardown(self) -> None:
        assert self._plan is not None
        pending = [s for s in self._plan.services if self._state.services.get(s) != DONE]
        outcomes = await asyncio.gather(*(self._teardown_one(name) for name in pending))
        failed = [
            f"{name} ({outcome})"
            for name, outcome in zip(pending, outcomes, strict=True)
            if outcome != DONE
        ]
        if failed:
            raise StepFailed("teardown", "; ".join(failed))

    async def _teardown_one(self, service: str) -> str:
        assert self._plan is not None
        assert self._mode is not None
        requested_at = self._state.requested_at or workflow.now()
        try:
            await run_activity(
                DeletionActivities.teardown_service,
                TeardownInput(
                    tenant_id=self._request.tenant_id,
                    service=service,
                    mode=self._mode,
                    # One key per service and deletion request: every retry and every run
                    # of this deletion sends the same one.
                    idempotency_key=(
                        f"{workflow.info().workflow_id}/{requested_at.isoformat()}/{service}"
                    ),
                    timeout=self._plan.migration_retry.timeout,
                ),
                options.teardown_options(self._plan.migration_retry),
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            self._state.services[service] = failure_reason(err)
            return self._state.services[service]
        self._state.services[service] = DONE
        return DONE

    async def _drop(self) -> None:
        assert self._mode is not None
        try:
            await run_activity(
                DeletionActivities.drop_storage,
                DropStorageInput(tenant_id=self._request.tenant_id, mode=self._mode),
                options.DROP_STORAGE,
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            raise StepFailed("drop", failure_reason(err)) from err

    async def _await_retry(self) -> None:
        """Wait in DELETION_ERROR for a retry; continue as new while the wait grows long."""
        self._awaiting_retry = True
        while True:
            await workflow.wait_condition(
                lambda: self._retry_requested or workflow.info().is_continue_as_new_suggested()
            )
            if self._retry_requested:
                break
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._retry_requested:
                workflow.continue_as_new(
                    DeleteInput(
                        tenant_id=self._request.tenant_id,
                        requested_by=self._request.requested_by,
                        reason=self._request.reason,
                        resume=ResumeDeletion(
                            actor=workflow_actor(workflow.info().workflow_id), retry=False
                        ),
                    )
                )
        self._awaiting_retry = False
        self._state.retry_cycle += 1

    async def _set_status(self, target: TenantStatus, reason: str | None = None) -> None:
        self._state.status = target
        self._state.reason = reason
        await transition_tenant(self._request.tenant_id, target, reason)

    def _finished(self, result: metrics.DeletionResult, duration: timedelta | None = None) -> None:
        metrics.deletion_finished(
            workflow.metric_meter(),
            self._mode.value if self._mode is not None else "unknown",
            result,
            duration,
        )

    async def _record_cancellation(self) -> None:
        """Leave the tenant in a definite state: a purge cancelled midway becomes
        DELETION_ERROR (retry-deletion resumes it); DELETION_SCHEDULED and DELETION_ERROR stay
        as they are (restore or the reconciler, and retry-deletion, are their ways out)."""
        if self._rejection is None and not self._state.scheduled:
            self._rejection = "the deletion was cancelled before it was scheduled"
            self._rejection_type = FailureType.PROVISION_CANCELLED
        if self._state.status is not TenantStatus.DELETING:
            return
        try:
            await self._set_status(TenantStatus.DELETION_ERROR, "deletion run cancelled")
        except FailureError as err:
            workflow.logger.warning("could not record the cancellation: %s", failure_reason(err))
