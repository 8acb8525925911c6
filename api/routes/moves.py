"""Moving a tenant's storage to another server, and updating a tenant (a new name, a new tier,
which moves it when the tier's pool is not its server's).

`POST /api/tenants/{id}/move` and `/cancel-move` need `servers:write`; `PATCH /api/tenants/{id}`
needs `tenants:write`. A move is recorded on the tenant's row first (MOVING, phase PREPARING: one
guarded write with the target's checks, `infra.db.tenant_moves`), then `MoveTenantWorkflow`
(`tenant-move-{id}`) is started; it reads the move from the row. A start Temporal surely did not
make (a run still open, an error it answered) rolls the row back, so no tenant is left MOVING
without a run; a lost answer is a 503, and the reconciler starts a MOVING tenant's missing run.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Response, status
from pydantic import Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from api.deps import Config, Moves, ServerWriter, Tenants, Workflows, Writer
from api.errors import InvalidRequest, StatusConflict, TenantNotFound
from api.gateway import MoveRunNotStarted, MoveRunOpen, WorkflowGateway
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES, TenantIdPath, load
from infra.db.tenant_moves import (
    MoveConflict,
    MoveRepository,
    MoveTargetRefused,
    TenantGone,
)
from tenancy.fleet import SERVER_NAME_PATTERN
from tenancy.models import MovePhase, RequestModel, SlaTier, Tenant, TenantName
from tenancy.status import TenantStatus
from tenancy.text import PrintableText

moves_router = APIRouter(prefix="/api/tenants", tags=["tenants"], route_class=GuardedRoute)
_log = logging.getLogger("platform.api.moves")


class MoveRequest(RequestModel):
    """Body of a move (optional): the target, and why."""

    to_server: Annotated[str, Field(pattern=SERVER_NAME_PATTERN)] | None = Field(
        default=None,
        description="A configured storage server; omitted: placement in the tenant's pool, "
        "never its current server.",
    )
    reason: Annotated[PrintableText, StringConstraints(min_length=1, max_length=500)] | None = None


class TenantUpdate(RequestModel):
    """Body of PATCH: the fields that may change. `storageMode` never does (422 naming it)."""

    name: TenantName | None = None
    sla_tier: SlaTier | None = Field(default=None, strict=False)
    # Not in the schema: present only to refuse it by name rather than as an unknown field.
    storage_mode: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("storage_mode", mode="before")
    @classmethod
    def _storage_mode_is_fixed(cls, value: object) -> object:
        raise ValueError("storageMode cannot change: a tenant keeps its storage mode")


def _target_refused(refused: MoveTargetRefused) -> InvalidRequest:
    return InvalidRequest(
        f"toServer: {refused}", errors=[{"field": "toServer", "message": str(refused)}]
    )


def _conflict(conflict: MoveConflict) -> StatusConflict:
    return StatusConflict(str(conflict), tenantStatus=conflict.status.value)


async def _start(
    moves: MoveRepository, workflows: WorkflowGateway, tenant_id: str, actor: str
) -> None:
    """Start the move's run; when Temporal surely did not (a run still open, an error it
    answered), the move recorded a moment ago is rolled back, so the tenant is not left MOVING
    without a run. A lost answer leaves it (the start may have been made)."""
    try:
        await workflows.start_move(tenant_id, actor)
    except (MoveRunOpen, MoveRunNotStarted):
        await moves.roll_back(
            tenant_id, "the move's workflow could not start", cancelled=True, actor=actor
        )
        raise


_MOVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"description": "No such tenant"},
    409: {"description": "The tenant is not ACTIVE (a move under way among others)"},
    422: {
        "description": "Invalid body, or a target that may not take the tenant: unknown, its "
        "current server, not ACTIVE, no room, or not its storage mode (`errors` names toServer)"
    },
    503: {"description": "Temporal is unavailable"},
}


@moves_router.post(
    "/{tenant_id}/move",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses=_MOVE_RESPONSES,
)
async def move_tenant(
    principal: ServerWriter,
    tenant_id: TenantIdPath,
    moves: Moves,
    workflows: Workflows,
    config: Config,
    request: MoveRequest | None = None,
) -> Tenant:
    """Move an ACTIVE tenant's storage to another server (needs `servers:write`): MOVING with
    its `move` at once, then `MoveTenantWorkflow` freezes, copies, verifies and switches it
    (or rolls it back by itself). Body `{"toServer"?, "reason"?}` optional."""
    body = request or MoveRequest()
    try:
        await moves.begin(
            tenant_id,
            principal.subject,
            body.reason,
            body.to_server,
            config.storage_fleet(),
            config.placement_map(),
        )
    except TenantGone:
        raise TenantNotFound(f"no tenant {tenant_id}") from None
    except MoveConflict as conflict:
        raise _conflict(conflict) from None
    except MoveTargetRefused as refused:
        raise _target_refused(refused) from None
    await _start(moves, workflows, tenant_id, principal.subject)
    return await moves.tenant(tenant_id)


@moves_router.post(
    "/{tenant_id}/cancel-move",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        404: {"description": "No such tenant"},
        409: {"description": "Not MOVING, switched already, or no run of its move is open"},
        503: {"description": "Temporal is unavailable"},
    },
)
async def cancel_move(
    principal: ServerWriter, tenant_id: TenantIdPath, tenants: Tenants, workflows: Workflows
) -> Tenant:
    """Roll back a move before its switch (needs `servers:write`): the run is told
    (`cancel_move`), unfreezes the source, drops the partial target and leaves the tenant
    ACTIVE on its source (MOVE_CANCELLED). 409 once switched."""
    tenant = await load(tenants, tenant_id)
    if tenant.status is not TenantStatus.MOVING or tenant.move is None:
        raise StatusConflict(
            f"tenant {tenant_id} is {tenant.status.value}; cancel-move needs MOVING",
            tenantStatus=tenant.status.value,
        )
    if tenant.move.phase is MovePhase.SWITCHED:
        raise StatusConflict(
            f"tenant {tenant_id}'s move has switched; it cannot be cancelled",
            tenantStatus=tenant.status.value,
            phase=tenant.move.phase.value,
        )
    decision = await workflows.cancel_move(tenant_id, principal.subject)
    if decision is None:
        raise StatusConflict(
            f"no run of tenant {tenant_id}'s move is open (the reconciler resumes it)",
            tenantStatus=tenant.status.value,
        )
    if not decision.accepted:
        # The run began its switch after the row was read: the move completes.
        raise StatusConflict(
            f"tenant {tenant_id}'s move has switched; it cannot be cancelled",
            tenantStatus=tenant.status.value,
            phase=decision.phase.value,
        )
    return await load(tenants, tenant_id)


@moves_router.patch(
    "/{tenant_id}",
    response_model=Tenant,
    responses={
        **AUTH_RESPONSES,
        200: {"description": "Updated (or nothing to change)"},
        202: {"description": "The new tier's pool is not the tenant's server's: it moves"},
        404: {"description": "No such tenant"},
        409: {"description": "DELETED, or a tier change that moves a tenant that is not ACTIVE"},
        422: {
            "description": "Invalid or unknown field (`storageMode` cannot change), or no "
            "server of the new tier's pool may take the tenant"
        },
        503: {"description": "Temporal is unavailable"},
    },
)
async def update_tenant(
    principal: Writer,
    tenant_id: TenantIdPath,
    update: TenantUpdate,
    response: Response,
    moves: Moves,
    workflows: Workflows,
    config: Config,
) -> Tenant:
    """Change a tenant's name (at once) or SLA tier (needs `tenants:write`): 200, or 202 and
    MOVING when the tier's pool is not the pool of the tenant's server (a move by placement
    in the new pool). Event TENANT_UPDATED with each field's old and new value."""
    try:
        outcome = await moves.update(
            tenant_id,
            principal.subject,
            name=update.name,
            tier=update.sla_tier,
            fleet=config.storage_fleet(),
            placement=config.placement_map(),
        )
    except TenantGone:
        raise TenantNotFound(f"no tenant {tenant_id}") from None
    except MoveConflict as conflict:
        raise _conflict(conflict) from None
    except MoveTargetRefused as refused:
        raise InvalidRequest(
            f"slaTier: {refused}", errors=[{"field": "slaTier", "message": str(refused)}]
        ) from None
    if not outcome.moving:
        return outcome.tenant
    await _start(moves, workflows, tenant_id, principal.subject)
    response.status_code = status.HTTP_202_ACCEPTED
    return await moves.tenant(tenant_id)
