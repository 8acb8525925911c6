"""Offboarding endpoints on the tenants resource: schedule a deletion, restore, retry a failed
purge. All need the `tenants:delete` scope (operators may hold write without it); like every
tenant route they are `GuardedRoute`s (api.guard)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Deleter, Deletions, Tenants, Workflows
from api.errors import ServiceUnavailable, StatusConflict
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES, TenantIdPath, load, require, take_retry
from infra.db.repository import TransitionRefused
from tenancy.models import Tenant
from tenancy.status import DELETION_STATUSES, TenantStatus
from tenancy.text import PrintableText

deletion_router = APIRouter(prefix="/api/tenants", tags=["tenants"], route_class=GuardedRoute)

# A reason is a line of printable text for the audit trail (tenancy.text).
ReasonQuery = Annotated[
    PrintableText | None,
    Query(
        min_length=1,
        max_length=500,
        description="Why, for the audit trail (one line of at most 500 printable characters).",
    ),
]
# A year at most: a longer grace period is more likely a unit mistake than a wish.
MAX_GRACE_SECONDS = 366 * 24 * 3600
# How often restore looks at the row while the deletion run takes the signal.
_RESTORE_POLL = 0.05


@deletion_router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "A deletion is already scheduled, running or done"},
        422: {"description": "Invalid graceSeconds or reason"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def delete_tenant(
    principal: Deleter,
    tenant_id: TenantIdPath,
    tenants: Tenants,
    workflows: Workflows,
    grace_seconds: Annotated[
        int | None,
        Query(
            alias="graceSeconds",
            ge=0,
            le=MAX_GRACE_SECONDS,
            description="Seconds before the purge (default PLATFORM_DELETION_GRACE_PERIOD); "
            "0 purges at once.",
        ),
    ] = None,
    reason: ReasonQuery = None,
) -> Tenant:
    """Schedule the tenant's deletion: DELETION_SCHEDULED now, purged (backup, each service's
    teardown, storage dropped) once the grace period is over, unless restored before. An open
    provisioning run is cancelled first."""
    tenant = await load(tenants, tenant_id)
    if tenant.status in DELETION_STATUSES:
        raise StatusConflict(
            f"tenant {tenant_id} is {tenant.status}; its deletion was already asked",
            tenantStatus=tenant.status.value,
        )
    grace = (
        grace_seconds
        if grace_seconds is not None
        else int(workflows.settings.deletion_grace_period.total_seconds())
    )
    await workflows.schedule_deletion(tenant_id, principal.subject, reason, grace)
    return await load(tenants, tenant_id)


@deletion_router.post(
    "/{tenant_id}/restore",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "Not in DELETION_SCHEDULED (the purge has started, or no deletion)"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def restore_tenant(
    principal: Deleter,
    tenant_id: TenantIdPath,
    tenants: Tenants,
    deletions: Deletions,
    workflows: Workflows,
    reason: ReasonQuery = None,
) -> Tenant:
    """Cancel a scheduled deletion: the tenant returns to the status it had when the deletion
    was asked (its open deletion run takes the `cancel_deletion` signal; with no run open the
    row is restored directly)."""
    tenant = await load(tenants, tenant_id)
    require(tenant, TenantStatus.DELETION_SCHEDULED, "restore")
    if not await workflows.cancel_deletion(tenant_id, principal.subject, reason):
        try:
            await deletions.restore(tenant_id, principal.subject, reason)
        except TransitionRefused as refused:
            raise StatusConflict(str(refused), tenantId=tenant_id) from None
        return await load(tenants, tenant_id)
    deadline = asyncio.get_running_loop().time() + workflows.settings.create_timeout.total_seconds()
    while True:
        tenant = await load(tenants, tenant_id)
        if tenant.status is not TenantStatus.DELETION_SCHEDULED:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceUnavailable(
                f"the deletion run of {tenant_id} did not take the restore in time; GET the "
                "tenant later (the signal stays with the run)"
            )
        await asyncio.sleep(_RESTORE_POLL)
    if tenant.status in DELETION_STATUSES:
        raise StatusConflict(
            f"tenant {tenant_id} is {tenant.status}: the purge started before the restore",
            tenantStatus=tenant.status.value,
        )
    return tenant


@deletion_router.post(
    "/{tenant_id}/retry-deletion",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "Not in DELETION_ERROR, or a retry is already under way"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def retry_deletion(
    principal: Deleter, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Resume a failed purge from its failed step: the waiting deletion run retries, or, when
    its run is closed, a new run takes the deletion over. Of concurrent requests one is taken."""
    tenant = await load(tenants, tenant_id)
    require(tenant, TenantStatus.DELETION_ERROR, "retry-deletion")
    await take_retry(
        await workflows.request_deletion_retry(tenant_id, principal.subject),
        lambda: workflows.resume_deletion(tenant_id, principal.subject, retry=True),
        tenants,
        tenant_id,
        principal.subject,
        "retry-deletion",
    )
    return await load(tenants, tenant_id)
