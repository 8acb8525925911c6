"""What the tenant routes share: the id in the path, the auth answers every protected route
documents, loading a tenant or 404, a status precondition, and taking a retry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Path

from api.deps import Tenants
from api.errors import StatusConflict, TenantNotFound
from tenancy.models import TENANT_ID_PATTERN, EventAction, Tenant
from tenancy.status import TenantStatus
from workflows.provision.contracts import RetryDecision

TenantIdPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN, description="The tenant id.")]
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one that does not verify"},
    403: {"description": "The token lacks the scope this operation needs"},
}

# The headers of an answer to a conditional GET (api.etags), and its 304.
CACHE_HEADERS: dict[str, Any] = {
    "ETag": {"description": "A strong entity tag of this answer", "schema": {"type": "string"}},
    "Cache-Control": {"description": "`no-cache`", "schema": {"type": "string"}},
}
NOT_MODIFIED: dict[str, Any] = {
    "description": "Not modified: `If-None-Match` names the current `ETag` (or is `*`); no body",
    "headers": CACHE_HEADERS,
}


async def load(tenants: Tenants, tenant_id: str) -> Tenant:
    tenant = await tenants.get(tenant_id)
    if tenant is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    return tenant


def refuse_while_moving(tenant_id: str, status: TenantStatus) -> None:
    """409 for a MOVING tenant: DELETE, retry-* and restore wait for its move to end."""
    if status is TenantStatus.MOVING:
        raise StatusConflict(
            f"tenant {tenant_id} is MOVING: a move is under way", tenantStatus=status.value
        )


def require(tenant: Tenant, needed: TenantStatus, operation: str) -> None:
    refuse_while_moving(tenant.id, tenant.status)
    if tenant.status is not needed:
        raise StatusConflict(
            f"tenant {tenant.id} is {tenant.status}; {operation} needs {needed}",
            tenantStatus=tenant.status.value,
        )


async def take_retry(
    decision: RetryDecision | None,
    start_run: Callable[[], Awaitable[object]],
    tenants: Tenants,
    tenant_id: str,
    actor: str,
    operation: str,
) -> None:
    """Act on the waiting run's answer to a retry request: it took the retry (and recorded
    RETRY_REQUESTED itself), another request took it first (409), or no run is open, so a new
    run is started and the request recorded here."""
    if decision is None:
        await start_run()
        await tenants.record_event(tenant_id, actor, EventAction.RETRY_REQUESTED, operation)
    elif not decision.accepted:
        raise StatusConflict(
            f"tenant {tenant_id} is {decision.status}; a retry is already under way",
            tenantStatus=decision.status.value,
        )
