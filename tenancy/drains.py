"""Arguments and results of the drain activities (`activities.drains`), shared by them and
`DrainServerWorkflow`."""

from __future__ import annotations

from enum import StrEnum

from tenancy.fleet import ServerState
from tenancy.models import CamelModel
from tenancy.status import TenantStatus


class DrainTenant(CamelModel):
    """A tenant on the server being drained, as the drain found it."""

    tenant_id: str
    status: TenantStatus


class DrainFailure(CamelModel):
    """A tenant the drain could not move, and why."""

    tenant_id: str
    reason: str


class LoadDrainInput(CamelModel):
    """Argument of `load_drain`."""

    server: str


class DrainPlan(CamelModel):
    """The tenants on the server (every status but DELETED), by id."""

    tenants: list[DrainTenant]


class BeginDrainMoveInput(CamelModel):
    """Argument of `begin_drain_move`: move `tenant_id` off `server` by placement."""

    server: str
    tenant_id: str
    actor: str
    reason: str | None = None


class BeginOutcome(StrEnum):
    """What `begin_drain_move` found or did."""

    # MOVING now (this begin, or an earlier attempt's): its run is to be started or followed.
    MOVING = "MOVING"
    # Not on the server any more (moved away or DELETED meanwhile).
    LEFT = "LEFT"
    # Not moved: not ACTIVE, or no server may take it (the reason says which).
    REFUSED = "REFUSED"


class BeginDrainMove(CamelModel):
    """Result of `begin_drain_move`."""

    outcome: BeginOutcome
    reason: str | None = None


class DrainTenantInput(CamelModel):
    """Argument of `drain_tenant_state`."""

    server: str
    tenant_id: str


class DrainTenantState(CamelModel):
    """Where a tenant of the drain stands: still MOVING, off the server, or back on it."""

    moving: bool
    left: bool
    status: TenantStatus | None = None
    status_reason: str | None = None


class DrainProgressInput(CamelModel):
    """Argument of `record_drain_progress`: the drain's counters as the run has them."""

    server: str
    total: int
    moved: int
    failed: int
    running: int
    failures: list[DrainFailure]


class FinishDrainInput(CamelModel):
    """Argument of `finish_drain`."""

    server: str
    actor: str
    cancelled: bool


class FinishDrain(CamelModel):
    """Result of `finish_drain`: the server's state afterwards."""

    state: ServerState
