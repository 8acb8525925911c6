"""Inputs and results of `MoveTenantWorkflow`: its start argument, its signal and the state
its query returns. The move itself (its target, reason and phase) is recorded on the tenant's
row when the API accepts it; the run reads it there, so a run started again carries on."""

from __future__ import annotations

from tenancy.models import CamelModel, MovePhase

# The names operators' scripts and the API address the workflow by (docs/concepts/workflows.md).
WORKFLOW_NAME = "MoveTenantWorkflow"
CANCEL_SIGNAL = "cancel_move"
# The same, answering whether the move will be rolled back (not once its switch has begun).
CANCEL_UPDATE = "request_cancel_move"
STATUS_QUERY = "get_status"


def move_workflow_id(tenant_id: str) -> str:
    """The id of the tenant's move run: one move of a tenant at a time."""
    return f"tenant-move-{tenant_id}"


class MoveInput(CamelModel):
    """Start argument of `MoveTenantWorkflow`."""

    tenant_id: str
    requested_by: str


class MoveState(CamelModel):
    """What the run's query answers: where the move stands."""

    tenant_id: str
    phase: MovePhase
    from_server: str | None = None
    to_server: str | None = None
    # Why the move waits (a rollback that cannot finish yet), or how it failed.
    status_reason: str | None = None
    cancel_requested: bool = False


class CancelMove(CamelModel):
    """Argument of the cancel signal and update: who asked."""

    requested_by: str | None = None


class CancelDecision(CamelModel):
    """The cancel update's answer: True when the move will be rolled back, and its phase."""

    accepted: bool
    phase: MovePhase
