"""Tenant endpoints. Thin: validation by pydantic, work by the gateway/repository.

Tenant endpoints need a bearer token: `tenants:read` to read, `tenants:write` to provision or
retry, `tenants:delete` to delete, restore or retry a deletion. Their routes are
`GuardedRoute`s, so the token and its scope are checked before the body is read (api.guard).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from api import cursor as cursors
from api.deps import Deleter, Deletions, Reader, Tenants, Workflows, Writer
from api.errors import ServiceUnavailable, StatusConflict, TenantNotFound
from api.guard import GuardedRoute
from infra.db.repository import TransitionRefused
from tenancy.models import (
    TENANT_ID_PATTERN,
    CamelModel,
    EventAction,
    SlaTier,
    Tenant,
    TenantEvent,
    TenantSpec,
)
from tenancy.status import DELETION_STATUSES, TenantStatus

tenants_router = APIRouter(prefix="/api/tenants", tags=["tenants"], route_class=GuardedRoute)

TenantIdPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN, description="The tenant id.")]
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one that does not verify"},
    403: {"description": "The token lacks the scope this operation needs"},
}


class TenantPage(CamelModel):
    """One page of tenants, oldest first; pass `nextCursor` back as `cursor` for the next."""

    items: list[Tenant]
    next_cursor: str | None = None


class TenantEvents(CamelModel):
    """A tenant's audit trail, oldest first."""

    items: list[TenantEvent]


async def _load(tenants: Tenants, tenant_id: str) -> Tenant:
    tenant = await tenants.get(tenant_id)
    if tenant is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    return tenant


@tenants_router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
        409: {"description": "The id exists"},
        422: {"description": "Invalid input"},
    },
)
async def create_tenant(
    principal: Writer,
    spec: TenantSpec,
    response: Response,
    tenants: Tenants,
    workflows: Workflows,
) -> Tenant:
    """Start provisioning; answers once the tenant is recorded, so a GET never 404s after."""
    await workflows.provision(spec, requested_by=principal.subject)
    response.headers["Location"] = f"/api/tenants/{spec.id}"
    return await _load(tenants, spec.id)


@tenants_router.get(
    "/{tenant_id}",
    response_model=Tenant,
    responses={**_AUTH_RESPONSES, 404: {"description": "No such tenant"}},
)
async def get_tenant(_: Reader, tenant_id: TenantIdPath, tenants: Tenants) -> Tenant:
    """One tenant with its per-service migration state."""
    return await _load(tenants, tenant_id)


@tenants_router.get(
    "/{tenant_id}/events",
    response_model=TenantEvents,
    responses={**_AUTH_RESPONSES, 404: {"description": "No such tenant"}},
)
async def tenant_events(_: Reader, tenant_id: TenantIdPath, tenants: Tenants) -> TenantEvents:
    """Who did what to the tenant and every status change, oldest first."""
    await _load(tenants, tenant_id)
    return TenantEvents(items=await tenants.events(tenant_id))


@tenants_router.get("", response_model=TenantPage, responses=_AUTH_RESPONSES)
async def list_tenants(
    _: Reader,
    tenants: Tenants,
    tenant_status: Annotated[TenantStatus | None, Query(alias="status")] = None,
    sla_tier: Annotated[SlaTier | None, Query(alias="slaTier")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TenantPage:
    """Tenants oldest first, filtered by status and tier, in pages of `limit`. DELETED
    tombstones are listed only when `status=DELETED` asks for them."""
    after = cursors.decode(cursor) if cursor else None
    page = await tenants.page(limit=limit, status=tenant_status, sla_tier=sla_tier, after=after)
    next_after = page.next_after
    return TenantPage(
        items=page.items, next_cursor=cursors.encode(next_after) if next_after else None
    )


@tenants_router.post(
    "/{tenant_id}/retry-migration",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "Not in MIGRATION_ERROR, or a retry is already under way"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def retry_migration(
    principal: Writer, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Re-run the services whose migrations failed: the waiting run retries, or, when the
    tenant's run is closed, a new run adopts the tenant. Of concurrent requests one is taken."""
    tenant = await _load(tenants, tenant_id)
    _require(tenant, TenantStatus.MIGRATION_ERROR, "retry-migration")
    # The waiting run records RETRY_REQUESTED itself when it takes the retry.
    decision = await workflows.request_retry(tenant_id, principal.subject)
    if decision is None:
        await workflows.adopt(tenant, principal.subject, "retry-migration")
        await tenants.record_event(
            tenant_id, principal.subject, EventAction.RETRY_REQUESTED, "retry-migration"
        )
    elif not decision.accepted:
        raise StatusConflict(
            f"tenant {tenant_id} is {decision.status}; a retry is already under way",
            tenantStatus=decision.status.value,
        )
    return await _load(tenants, tenant_id)


@tenants_router.post(
    "/{tenant_id}/retry-provisioning",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "Not in PROVISION_ERROR, or a run is already under way"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def retry_provisioning(
    principal: Writer, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Provision a tenant in PROVISION_ERROR again: a new run adopts it and re-runs the chain
    (storage creation is idempotent; services already migrated are not called again)."""
    tenant = await _load(tenants, tenant_id)
    _require(tenant, TenantStatus.PROVISION_ERROR, "retry-provisioning")
    await workflows.adopt(tenant, principal.subject, "retry-provisioning")
    await tenants.record_event(
        tenant_id, principal.subject, EventAction.RETRY_REQUESTED, "retry-provisioning"
    )
    return await _load(tenants, tenant_id)


# A reason is a line of text for the audit trail.
ReasonQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Why, for the audit trail (one line, at most 500 characters).",
    ),
]
# A year at most: a longer grace period is more likely a unit mistake than a wish.
MAX_GRACE_SECONDS = 366 * 24 * 3600
# How often restore looks at the row while the deletion run takes the signal.
_RESTORE_POLL = 0.05


@tenants_router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
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
    tenant = await _load(tenants, tenant_id)
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
    return await _load(tenants, tenant_id)


@tenants_router.post(
    "/{tenant_id}/restore",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
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
    tenant = await _load(tenants, tenant_id)
    _require(tenant, TenantStatus.DELETION_SCHEDULED, "restore")
    if not await workflows.cancel_deletion(tenant_id, principal.subject, reason):
        try:
            await deletions.restore(tenant_id, principal.subject, reason)
        except TransitionRefused as refused:
            raise StatusConflict(str(refused), tenantId=tenant_id) from None
        return await _load(tenants, tenant_id)
    deadline = asyncio.get_running_loop().time() + workflows.settings.create_timeout.total_seconds()
    while True:
        tenant = await _load(tenants, tenant_id)
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


@tenants_router.post(
    "/{tenant_id}/retry-deletion",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **_AUTH_RESPONSES,
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
    tenant = await _load(tenants, tenant_id)
    _require(tenant, TenantStatus.DELETION_ERROR, "retry-deletion")
    decision = await workflows.request_deletion_retry(tenant_id, principal.subject)
    if decision is None:
        await workflows.resume_deletion(tenant_id, principal.subject, retry=True)
        await tenants.record_event(
            tenant_id, principal.subject, EventAction.RETRY_REQUESTED, "retry-deletion"
        )
    elif not decision.accepted:
        raise StatusConflict(
            f"tenant {tenant_id} is {decision.status}; a retry is already under way",
            tenantStatus=decision.status.value,
        )
    return await _load(tenants, tenant_id)


def _require(tenant: Tenant, needed: TenantStatus, operation: str) -> None:
    if tenant.status is not needed:
        raise StatusConflict(
            f"tenant {tenant.id} is {tenant.status}; {operation} needs {needed}",
            tenantStatus=tenant.status.value,
        )
