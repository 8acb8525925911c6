"""Arguments and results of the move activities (`activities.moves`), shared by them and
`MoveTenantWorkflow`."""

from __future__ import annotations

from datetime import datetime

from tenancy.models import CamelModel, MovePhase, StorageMode
from tenancy.status import TenantStatus


class LoadMoveInput(CamelModel):
    """Argument of `load_move`."""

    tenant_id: str


class MoveRecord(CamelModel):
    """The move recorded on the tenant's row (none when the tenant is not MOVING), and how long
    the worker keeps a moved tenant's source (`PLATFORM_MOVE_SOURCE_RETENTION`)."""

    tenant_id: str
    status: TenantStatus
    storage_mode: StorageMode
    # The server the tenant's row names: the source until the switch, the target after it.
    storage_server: str | None = None
    from_server: str | None = None
    to_server: str | None = None
    phase: MovePhase | None = None
    requested_at: datetime | None = None
    # The tenant's statusReason: names a rollback under way (`rollback_under_way`).
    status_reason: str | None = None
    retention_seconds: float


# A rollback under way is written on the row before it starts, so that a run started again
# (a lost run, the reconciler's) finishes it rather than trying the move again.
ROLLING_BACK = "rolling back: "
ROLLING_BACK_CANCELLED = "rolling back (cancelled): "
_WAITING = " (waiting: "


def rollback_reason(reason: str, *, cancelled: bool, waiting: str | None = None) -> str:
    """The statusReason of a rollback under way, for `reason`, maybe waiting for `waiting`."""
    prefix = ROLLING_BACK_CANCELLED if cancelled else ROLLING_BACK
    return prefix + reason + (f"{_WAITING}{waiting})" if waiting else "")


def rollback_under_way(status_reason: str | None) -> tuple[str, bool] | None:
    """The reason and whether it was a cancel, of the rollback `status_reason` names; None
    when it names none."""
    if status_reason is None:
        return None
    for prefix, cancelled in ((ROLLING_BACK_CANCELLED, True), (ROLLING_BACK, False)):
        if status_reason.startswith(prefix):
            reason = status_reason.removeprefix(prefix)
            return reason.rsplit(_WAITING, 1)[0] if _WAITING in reason else reason, cancelled
    return None


class MoveStepInput(CamelModel):
    """Argument of a storage step of a move: the tenant's storage, from one server to another."""

    tenant_id: str
    mode: StorageMode
    from_server: str
    to_server: str


class MovePhaseInput(CamelModel):
    """Argument of `set_move_phase`."""

    tenant_id: str
    phase: MovePhase


class MoveReasonInput(CamelModel):
    """Argument of `set_move_reason`: why the move waits, or None once it no longer does."""

    tenant_id: str
    reason: str | None = None


class SwitchInput(CamelModel):
    """Argument of `switch_move`: the tenant now lives on `to_server`; its source is kept until
    `drop_after`."""

    tenant_id: str
    mode: StorageMode
    from_server: str
    to_server: str
    drop_after: datetime


class RollBackInput(CamelModel):
    """Argument of `roll_back_move`: the tenant stays on its source, ACTIVE, for `reason`."""

    tenant_id: str
    reason: str
    cancelled: bool = False


class CopyResult(CamelModel):
    """What `copy_move` copied."""

    bytes: int
    tables: int
    seconds: float
