"""Activities on the platform's metadata: the plan, the tenant row and its guarded status."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures, transition
from infra.db.repository import (
    Adoption,
    TenantOwnedElsewhere,
    TenantRepository,
)
from tenancy.contracts import (
    ClaimedTenant,
    ClaimTenantInput,
    MigrationFailedInput,
    MigrationRetry,
    PlanInput,
    ProvisioningPlan,
    RecordEventInput,
    RecordTenantInput,
    TransitionInput,
    TransitionResult,
)
from tenancy.failures import FailureType
from tenancy.models import Tenant
from tenancy.settings import Settings


class MetadataActivities:
    """Bound to one repository and the worker's settings."""

    def __init__(self, tenants: TenantRepository, settings: Settings) -> None:
        self._tenants = tenants
        self._settings = settings

    @activity.defn(name="load_plan")
    async def load_plan(self, _: PlanInput) -> ProvisioningPlan:
        """The services and retry policy this worker is configured with, fixed for the run."""
        return self._plan()

    def _plan(self) -> ProvisioningPlan:
        s = self._settings
        return ProvisioningPlan(
            services=[service.name for service in s.downstream_services],
            migration_retry=MigrationRetry(
                max_attempts=s.migration_max_attempts,
                initial_interval=s.migration_initial_interval,
                max_interval=s.migration_max_interval,
                timeout=s.migration_timeout,
                schedule_to_start=s.migration_schedule_to_start,
            ),
        )

    @activity.defn(name="record_tenant")
    async def record_tenant(self, request: RecordTenantInput) -> Tenant:
        """Insert the tenant row; a retry of the same run finds it, another run is refused
        unless this run adopts the tenant from the run that owns it."""
        adopt = request.adopt
        try:
            with metadata_failures("record_tenant"):
                return await self._tenants.insert(
                    request.spec,
                    request.workflow_id,
                    request.run_id,
                    request.services,
                    request.created_by,
                    Adoption(adopt.replaces_run_id, adopt.actor, adopt.reason) if adopt else None,
                )
        except TenantOwnedElsewhere:
            raise ApplicationError(
                f"tenant {request.spec.id} is owned by another run"
                if adopt
                else f"tenant {request.spec.id} already exists",
                type=FailureType.TENANT_EXISTS,
                non_retryable=True,
            ) from None

    @activity.defn(name="claim_tenant")
    async def claim_tenant(self, request: ClaimTenantInput) -> ClaimedTenant:
        """`load_plan` and `record_tenant` in one call (runs with the lean history): the plan,
        and the row this run owns, inserted with the plan's services or found."""
        plan = self._plan()
        tenant = await self.record_tenant(request.recording(plan.services))
        return ClaimedTenant(plan=plan, tenant=tenant)

    @activity.defn(name="transition_status")
    async def transition_status(self, request: TransitionInput) -> TransitionResult:
        """Apply one status transition, only from its allowed source states."""
        status = await transition(self._tenants, request.tenant_id, request.target, request.reason)
        return TransitionResult(status=status)

    @activity.defn(name="mark_migration_failed")
    async def mark_migration_failed(self, request: MigrationFailedInput) -> None:
        """Record that a service's migration failed for good (until a retry signal)."""
        with metadata_failures("mark_migration_failed"):
            await self._tenants.migration_failed(request.tenant_id, request.service, request.error)

    @activity.defn(name="record_event")
    async def record_event(self, request: RecordEventInput) -> None:
        """Append an operator's action (a retry the workflow took) to the audit trail."""
        with metadata_failures("record_event"):
            await self._tenants.record_event(
                request.tenant_id, request.actor, request.action, request.reason, request.key
            )
