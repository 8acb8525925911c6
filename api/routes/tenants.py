"""Tenant endpoints. Thin: validation by pydantic, work by the gateway/repository.

Tenant endpoints need a bearer token: `tenants:read` to read, `tenants:write` to provision or
retry (`tenants:delete` for offboarding, in api.routes.deletion). Their routes are
`GuardedRoute`s, so the token and its scope are checked before the body is read (api.guard).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api import cursor as cursors
from api.deps import Reader, Tenants, Workflows, Writer
from api.errors import TenantNotFound
from api.etags import conditional_json, none_match, not_modified, shape_of
from api.guard import GuardedRoute
from api.routes.common import (
    AUTH_RESPONSES,
    CACHE_HEADERS,
    NOT_MODIFIED,
    TenantIdPath,
    load,
    require,
    take_retry,
)
from tenancy.models import (
    CamelModel,
    EventAction,
    SlaTier,
    StorageMode,
    Tenant,
    TenantEvent,
    TenantSpec,
)
from tenancy.status import TenantStatus

# In every tenant's ETag: a release that changes the answer's shape changes the tags.
TENANT_SHAPE = shape_of(Tenant)
# A prefix of a tenant id: the id's characters, at most its length.
ID_PREFIX_PATTERN = r"^[a-z0-9_]{1,40}$"

tenants_router = APIRouter(prefix="/api/tenants", tags=["tenants"], route_class=GuardedRoute)


class TenantPage(CamelModel):
    """One page of tenants, oldest first; pass `nextCursor` back as `cursor` for the next."""

    items: list[Tenant]
    next_cursor: str | None = None


class TenantEvents(CamelModel):
    """A tenant's audit trail, oldest first."""

    items: list[TenantEvent]


@tenants_router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
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
    """Start provisioning; answers once the tenant is recorded, so a GET never 404s after (the
    API writes the row with the started run's id: no worker is waited for)."""
    tenant = await workflows.create(spec, tenants, requested_by=principal.subject)
    response.headers["Location"] = f"/api/tenants/{spec.id}"
    return tenant


@tenants_router.get(
    "/{tenant_id}",
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        200: {"description": "The tenant", "headers": CACHE_HEADERS},
        304: NOT_MODIFIED,
        404: {"description": "No such tenant"},
    },
)
async def get_tenant(
    _: Reader, tenant_id: TenantIdPath, tenants: Tenants, request: Request
) -> Response:
    """One tenant with its per-service migration state, with a strong `ETag` of the answer;
    304 without a body when `If-None-Match` names it."""
    snapshot = await tenants.snapshot(tenant_id)
    if snapshot is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    # Of the values the answer is made of, and of its shape: a 304 builds no answer.
    etag = f'"{TENANT_SHAPE}-{snapshot.version}"'
    if none_match(request.headers.get("if-none-match"), etag):
        return not_modified(etag)
    return conditional_json(request, snapshot.tenant().model_dump_json().encode(), etag)


@tenants_router.get(
    "/{tenant_id}/events",
    response_model=TenantEvents,
    responses={**AUTH_RESPONSES, 404: {"description": "No such tenant"}},
)
async def tenant_events(_: Reader, tenant_id: TenantIdPath, tenants: Tenants) -> TenantEvents:
    """Who did what to the tenant and every status change, oldest first."""
    await load(tenants, tenant_id)
    return TenantEvents(items=await tenants.events(tenant_id))


@tenants_router.get("", response_model=TenantPage, responses=AUTH_RESPONSES)
async def list_tenants(
    _: Reader,
    tenants: Tenants,
    tenant_status: Annotated[TenantStatus | None, Query(alias="status")] = None,
    sla_tier: Annotated[SlaTier | None, Query(alias="slaTier")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    storage_mode: Annotated[StorageMode | None, Query(alias="storageMode")] = None,
    id_prefix: Annotated[
        str | None,
        Query(
            alias="idPrefix",
            pattern=ID_PREFIX_PATTERN,
            description="Only tenants whose id starts with this.",
        ),
    ] = None,
) -> TenantPage:
    """Tenants oldest first, filtered by status, tier, storage mode and id prefix, in pages of
    `limit`. DELETED tombstones are listed only when `status=DELETED` asks for them."""
    after = cursors.decode(cursor) if cursor else None
    page = await tenants.page(
        limit=limit,
        status=tenant_status,
        sla_tier=sla_tier,
        storage_mode=storage_mode,
        id_prefix=id_prefix,
        after=after,
    )
    next_after = page.next_after
    return TenantPage(
        items=page.items, next_cursor=cursors.encode(next_after) if next_after else None
    )


@tenants_router.post(
    "/{tenant_id}/retry-migration",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {
            "description": "Not in MIGRATION_ERROR (a move under way among others), or a "
            "retry is already under way"
        },
        503: {"description": "Temporal is unavailable"},
    },
)
async def retry_migration(
    principal: Writer, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Re-run the services whose migrations failed: the waiting run retries, or, when the
    tenant's run is closed, a new run adopts the tenant. Of concurrent requests one is taken."""
    tenant = await load(tenants, tenant_id)
    require(tenant, TenantStatus.MIGRATION_ERROR, "retry-migration")
    await take_retry(
        await workflows.request_retry(tenant_id, principal.subject),
        lambda: workflows.adopt(tenant, principal.subject, "retry-migration"),
        tenants,
        tenant_id,
        principal.subject,
        "retry-migration",
    )
    return await load(tenants, tenant_id)


@tenants_router.post(
    "/{tenant_id}/retry-provisioning",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {
            "description": "Not in PROVISION_ERROR (a move under way among others), or a run "
            "is already under way"
        },
        503: {"description": "Temporal is unavailable"},
    },
)
async def retry_provisioning(
    principal: Writer, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Provision a tenant in PROVISION_ERROR again: a new run adopts it and re-runs the chain
    (storage creation is idempotent; services already migrated are not called again)."""
    tenant = await load(tenants, tenant_id)
    require(tenant, TenantStatus.PROVISION_ERROR, "retry-provisioning")
    await workflows.adopt(tenant, principal.subject, "retry-provisioning")
    await tenants.record_event(
        tenant_id, principal.subject, EventAction.RETRY_REQUESTED, "retry-provisioning"
    )
    return await load(tenants, tenant_id)
