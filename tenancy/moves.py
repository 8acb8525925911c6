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
    retention_seconds: float


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
