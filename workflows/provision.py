"""`ProvisionTenantWorkflow`: record metadata -> create storage -> migrate every service.

The workflow owns the status machine. The tenant row in PostgreSQL follows it through
guarded transitions; the `TenantStatus` search attribute follows it after each one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.metadata import MetadataActivities
    from activities.migrations import MigrationActivities
    from activities.storage import StorageActivities
    from tenancy import metrics
    from tenancy import search_attributes as sa
    from tenancy.contracts import (
        CreateStorageInput,
        MigrateInput,
        MigrationFailedInput,
        PlanInput,
        ProvisioningPlan,
        ProvisionInput,
        RecordTenantInput,
        ServiceState,
        TenantState,
        TransitionInput,
    )
    from tenancy.failures import FailureType, summarize
    from tenancy.status import MigrationStatus, TenantStatus
    from workflows import options
    from workflows.options import run_activity

WORKFLOW_NAME = "ProvisionTenantWorkflow"
RETRY_SIGNAL = "retry_migration"
STATUS_QUERY = "get_status"
RECORDED_UPDATE = "tenant_recorded"
# Statuses that end a provisioning pass, each counted in `platform_provisions_finished`.
_OUTCOMES = {
    TenantStatus.ACTIVE: metrics.ProvisionResult.ACTIVE,
    TenantStatus.PROVISION_ERROR: metrics.ProvisionResult.PROVISION_ERROR,
    TenantStatus.MIGRATION_ERROR: metrics.ProvisionResult.MIGRATION_ERROR,
}


def failure_reason(error: ActivityError) -> str:
    """Why an activity failed, as one short line: the activity's own ApplicationError message
    if it raised one, else the innermost cause (a timeout, say)."""
    chain: list[BaseException] = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    own = [c for c in chain if isinstance(c, ApplicationError)]
    cause = own[0] if own else chain[-1]
    # FailureError.message is the bare message; str() would prefix the failure type.
    text = cause.message if isinstance(cause, FailureError) else str(cause)
    return summarize(text or type(cause).__name__)


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
        self._state = TenantState(tenant_id=request.spec.id, status=TenantStatus.PROVISIONING)
        self._plan: ProvisioningPlan | None = None
        self._rejection: str | None = None
        self._retry_requested = False
        self._local_metadata = False

    @workflow.run
    async def run(self, request: ProvisionInput) -> TenantState:
        """Walk the chain; the result is the final state (ACTIVE)."""
        workflow.upsert_search_attributes(
            [
                sa.TENANT_ID.value_set(self._spec.id),
                sa.TENANT_STATUS.value_set(self._state.status.value),
                sa.SLA_TIER.value_set(self._spec.sla_tier.value),
                sa.STORAGE_MODE.value_set(self._spec.storage_mode.value),
            ]
        )
        metrics.provision_started(workflow.metric_meter(), self._spec)
        # Runs started before the patch keep scheduling metadata writes as regular activities.
        self._local_metadata = workflow.patched(options.LOCAL_METADATA_PATCH)
        self._plan = await run_activity(
            MetadataActivities.load_plan, PlanInput(), options.LOAD_PLAN
        )
        self._state.services = {name: ServiceState() for name in self._plan.services}
        for step in PROVISION_CHAIN:
            if step.patch_id is not None and not workflow.patched(step.patch_id):
                continue
            await step.run(self)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.query(name=STATUS_QUERY)
    def get_status(self) -> TenantState:
        """The live state: status, storage and each service's migration."""
        return self._state

    @workflow.signal(name=RETRY_SIGNAL)
    def retry_migration(self) -> None:
        """Re-run the services that have not succeeded; ignored outside MIGRATION_ERROR."""
        if self._state.status is TenantStatus.MIGRATION_ERROR:
            self._retry_requested = True
        else:
            workflow.logger.info("retry_migration ignored in status %s", self._state.status)

    @workflow.update(name=RECORDED_UPDATE)
    async def tenant_recorded(self) -> TenantState:
        """Completes once the tenant row exists, so the API never answers 202 before it."""
        await workflow.wait_condition(lambda: self._state.recorded or self._rejection is not None)
        if self._rejection is not None:
            raise ApplicationError(self._rejection, type=FailureType.TENANT_EXISTS)
        return self._state

    def _metadata(self, opts: options.ActivityOptions) -> options.ActivityOptions:
        """Local for runs that took the patch, regular for runs started before it."""
        return opts if self._local_metadata else options.as_regular(opts)

    async def _record_metadata(self) -> None:
        assert self._plan is not None
        info = workflow.info()
        try:
            await run_activity(
                MetadataActivities.record_tenant,
                RecordTenantInput(
                    spec=self._spec,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    services=self._plan.services,
                    created_by=self._requested_by,
                ),
                self._metadata(options.RECORD_TENANT),
            )
        except ActivityError as err:
            self._rejection = failure_reason(err)
            metrics.provision_finished(
                workflow.metric_meter(), self._spec, metrics.ProvisionResult.REJECTED
            )
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError(
                self._rejection, type=FailureType.TENANT_EXISTS, non_retryable=True
            ) from err
        self._state.recorded = True

    async def _create_storage(self) -> None:
        try:
            self._state.storage = await run_activity(
                StorageActivities.create_storage,
                CreateStorageInput(tenant_id=self._spec.id, mode=self._spec.storage_mode),
                options.CREATE_STORAGE,
            )
        except ActivityError as err:
            reason = failure_reason(err)
            await self._set_status(TenantStatus.PROVISION_ERROR, reason)
            raise ApplicationError(
                f"storage for tenant {self._spec.id} failed: {reason}",
                type=FailureType.PROVISION_FAILED,
                non_retryable=True,
            ) from err
        await self._set_status(TenantStatus.MIGRATING)

    async def _migrate_services(self) -> None:
        while True:
            pending = [
                name
                for name, service in self._state.services.items()
                if service.status is not MigrationStatus.SUCCEEDED
            ]
            outcomes = await asyncio.gather(*(self._migrate(name) for name in pending))
            failed = [name for name, ok in zip(pending, outcomes, strict=True) if not ok]
            if not failed:
                await self._set_status(TenantStatus.ACTIVE)
                return
            # Armed before the status changes, so a signal sent as soon as the row reads
            # MIGRATION_ERROR is never dropped.
            self._retry_requested = False
            await self._set_status(
                TenantStatus.MIGRATION_ERROR, f"migration failed for: {', '.join(failed)}"
            )
            await workflow.wait_condition(lambda: self._retry_requested)
            self._state.retry_cycle += 1
            await self._set_status(TenantStatus.MIGRATING, "retry_migration signal")

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
        )
        # Runs started before per-service queues keep their calls on the workflow's queue.
        task_queue = (
            options.migration_task_queue(info.task_queue, service)
            if workflow.patched(options.PER_SERVICE_QUEUES_PATCH)
            else None
        )
        try:
            result = await run_activity(
                MigrationActivities.migrate_service,
                request,
                options.migrate_service_options(self._plan.migration_retry, task_queue),
            )
        except ActivityError as err:
            reason = failure_reason(err)
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
        return True

    async def _set_status(self, target: TenantStatus, reason: str | None = None) -> None:
        self._state.status = target
        self._state.reason = reason
        await run_activity(
            MetadataActivities.transition_status,
            TransitionInput(tenant_id=self._spec.id, target=target, reason=reason),
            self._metadata(options.TRANSITION_STATUS),
        )
        workflow.upsert_search_attributes([sa.TENANT_STATUS.value_set(target.value)])
        workflow.logger.info(
            "tenant %s is %s%s", self._spec.id, target.value, f": {reason}" if reason else ""
        )
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
