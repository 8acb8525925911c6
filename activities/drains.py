"""Activities of a storage server's drain (`DrainServerWorkflow`): the tenants on the server, a
move of one of them begun by placement (the move itself is `MoveTenantWorkflow`, run by the
drain as a child), where a tenant stands, the drain's progress and its end, on the server's row.

Each is idempotent: a begin repeated after it succeeded finds the tenant MOVING (and the drain
starts or follows its run as it would have), progress is written whole, the end is a no-op once
written.
"""

from __future__ import annotations

from temporalio import activity

from activities.bookkeeping import metadata_failures
from infra.db.drains import DrainRepository
from infra.db.repository import TenantRepository
from infra.db.tenant_moves import MoveConflict, MoveRepository, MoveTargetRefused, TenantGone
from tenancy.drains import (
    BeginDrainMove,
    BeginDrainMoveInput,
    BeginOutcome,
    DrainPlan,
    DrainProgressInput,
    DrainTenantInput,
    DrainTenantState,
    FinishDrain,
    FinishDrainInput,
    LoadDrainInput,
)
from tenancy.settings import Settings
from tenancy.status import TenantStatus


class DrainActivities:
    """Bound to the drain, move and tenant repositories and the settings (the fleet, the
    placement)."""

    def __init__(
        self,
        drains: DrainRepository,
        moves: MoveRepository,
        tenants: TenantRepository,
        settings: Settings,
    ) -> None:
        self._drains = drains
        self._moves = moves
        self._tenants = tenants
        self._fleet = settings.storage_fleet()
        self._placement = settings.placement_map()

    @activity.defn(name="load_drain")
    async def load_drain(self, request: LoadDrainInput) -> DrainPlan:
        """The tenants on the server (every status but DELETED), by id."""
        with metadata_failures("load_drain"):
            return DrainPlan(tenants=await self._drains.tenants(request.server))

    @activity.defn(name="begin_drain_move")
    async def begin_drain_move(self, request: BeginDrainMoveInput) -> BeginDrainMove:
        """Begin the tenant's move off the server by placement in its tier's pool (never a
        server that is not ACTIVE, never its own PostgreSQL server): MOVING when it is moving
        now (this begin, an earlier attempt's, or an operator's move), LEFT when it is no
        longer on the server, REFUSED (with why) when it is not ACTIVE or has nowhere to go."""
        with metadata_failures("begin_drain_move"):
            tenant = await self._tenants.get(request.tenant_id)
            if tenant is None or tenant.status is TenantStatus.DELETED:
                return BeginDrainMove(outcome=BeginOutcome.LEFT)
            if tenant.status is TenantStatus.MOVING:
                return BeginDrainMove(outcome=BeginOutcome.MOVING)
            if tenant.storage_server != request.server:
                return BeginDrainMove(outcome=BeginOutcome.LEFT)
            why = f"drain of {request.server}" + (f": {request.reason}" if request.reason else "")
            try:
                await self._moves.begin(
                    request.tenant_id, request.actor, why, None, self._fleet, self._placement
                )
            except TenantGone:
                return BeginDrainMove(outcome=BeginOutcome.LEFT)
            except MoveConflict as conflict:
                if conflict.status is TenantStatus.MOVING:
                    return BeginDrainMove(outcome=BeginOutcome.MOVING)
                return BeginDrainMove(outcome=BeginOutcome.REFUSED, reason=str(conflict))
            except MoveTargetRefused as refused:
                return BeginDrainMove(outcome=BeginOutcome.REFUSED, reason=str(refused))
        return BeginDrainMove(outcome=BeginOutcome.MOVING)

    @activity.defn(name="drain_tenant_state")
    async def drain_tenant_state(self, request: DrainTenantInput) -> DrainTenantState:
        """Whether the tenant still moves, has left the server, or is on it still (and why)."""
        with metadata_failures("drain_tenant_state"):
            tenant = await self._tenants.get(request.tenant_id)
        if tenant is None:
            return DrainTenantState(moving=False, left=True)
        return DrainTenantState(
            moving=tenant.status is TenantStatus.MOVING,
            left=tenant.status is TenantStatus.DELETED or tenant.storage_server != request.server,
            status=tenant.status,
            status_reason=tenant.status_reason,
        )

    @activity.defn(name="record_drain_progress")
    async def record_drain_progress(self, request: DrainProgressInput) -> None:
        """The drain's counters and failures on the server's row."""
        with metadata_failures("record_drain_progress"):
            await self._drains.progress(
                request.server,
                total=request.total,
                moved=request.moved,
                failed=request.failed,
                running=request.running,
                failures=request.failures,
            )

    @activity.defn(name="finish_drain")
    async def finish_drain(self, request: FinishDrainInput) -> FinishDrain:
        """The drain's end on the server's row: CORDONED (cancelled), DRAINED (empty), or
        DRAINING with its run ended (tenants left)."""
        with metadata_failures("finish_drain"):
            state = await self._drains.finish(
                request.server, request.actor, cancelled=request.cancelled
            )
        return FinishDrain(state=state)
