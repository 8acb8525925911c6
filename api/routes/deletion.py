"""Offboarding endpoints on the tenants resource: schedule a deletion, restore, retry a failed
purge. All need the `tenants:delete` scope (operators may hold write without it); like every
tenant route they are `GuardedRoute`s (api.guard)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from api.deps import Deleter, Deletions, TemporalClient, Tenants, Workflows
from api.errors import ServiceUnavailable, StatusConflict, TenantNotFound
from api.guard import GuardedRoute
from api.routes.common import (
    AUTH_RESPONSES,
    TenantIdPath,
    load,
    refuse_while_moving,
    require,
    take_retry,
)
from infra.db.deletions import RestoreRefused, TenantMissing
from infra.db.repository import TransitionRefused
from tenancy.models import Tenant
from tenancy.naming import deletion_workflow_id
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
_log = logging.getLogger("platform.api.deletion")


@deletion_router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {
            "description": "A deletion is already scheduled, running or done, or a move is "
            "under way"
        },
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
    refuse_while_moving(tenant_id, tenant.status)
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
        409: {
            "description": "Not in DELETION_SCHEDULED (restored already, the purge has "
            "started, no deletion, or a move is under way); of concurrent restores all but one"
        },
        503: {"description": "PostgreSQL is unavailable"},
    },
)
async def restore_tenant(
    principal: Deleter,
    tenant_id: TenantIdPath,
    tenants: Tenants,
    deletions: Deletions,
    workflows: Workflows,
    client: TemporalClient,
    reason: ReasonQuery = None,
) -> Tenant:
    """Cancel a scheduled deletion: the tenant returns to the status it had when the deletion
    was asked. One guarded write takes the restore, so of concurrent restores one is answered
    202 and the others 409. The deletion's open run is then told (`cancel_deletion`) and ends;
    the answer waits for that, at most the API's timeout (the restore is recorded either way:
    a run that missed the signal finds the tenant restored when its grace period ends)."""
    try:
        await deletions.take_restore(tenant_id, principal.subject, reason)
    except TenantMissing:
        raise TenantNotFound(f"no tenant {tenant_id}") from None
    except RestoreRefused as refused:
        refuse_while_moving(tenant_id, refused.status)
        raise StatusConflict(str(refused), tenantStatus=refused.status.value) from None
    except TransitionRefused as refused:
        raise StatusConflict(str(refused), tenantId=tenant_id) from None
    try:
        if await workflows.cancel_deletion(tenant_id, principal.subject, reason):
            await _run_closed(client, tenant_id, workflows.settings.create_timeout)
    except ServiceUnavailable as unavailable:
        _log.warning(
            "restore of %s recorded; its deletion run was not told: %s", tenant_id, unavailable
        )
    return await load(tenants, tenant_id)


async def _run_closed(client: Client, tenant_id: str, timeout: timedelta) -> None:
    """Wait until the tenant's deletion run has closed, at most `timeout`; however it ends."""
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id))
    try:
        await asyncio.wait_for(handle.result(), timeout=timeout.total_seconds())
    except (TimeoutError, WorkflowFailureError, RPCError) as exc:
        _log.info("deletion run of %s after its restore: %s", tenant_id, type(exc).__name__)


@deletion_router.post(
    "/{tenant_id}/retry-deletion",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {
            "description": "Not in DELETION_ERROR (a move under way among others), or a "
            "retry is already under way"
        },
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
