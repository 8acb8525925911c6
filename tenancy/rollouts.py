"""Fleet rollouts, the domain: what a rollout request says, the statuses of a rollout, its waves
and its tenants, and what the API shows of one."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from tenancy.models import (
    BY_VALUE,
    MAX_REQUEST_INT,
    TENANT_ID_PATTERN,
    CamelModel,
    RequestModel,
    SlaTier,
)
from tenancy.settings import DownstreamService
from tenancy.status import TenantStatus

WAVE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
# Halting is decided once this many tenants of a wave finished (or the whole wave, if smaller).
HALT_MIN_FINISHED = 10


class RolloutStatus(StrEnum):
    """Lifecycle of a rollout."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    HALTED = "HALTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_ROLLOUT_STATUSES = frozenset(
    {RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED}
)


class WaveStatus(StrEnum):
    """Where one wave stands."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RolloutTenantStatus(StrEnum):
    """One tenant's result in a rollout."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class RolloutAction(StrEnum):
    """What a rollout's audit event records."""

    STARTED = "ROLLOUT_STARTED"
    PAUSED = "ROLLOUT_PAUSED"
    RESUMED = "ROLLOUT_RESUMED"
    HALTED = "ROLLOUT_HALTED"
    CANCELLED = "ROLLOUT_CANCELLED"
    FINISHED = "ROLLOUT_FINISHED"
    RETRIED = "ROLLOUT_RETRIED"


TenantIdItem = Annotated[str, StringConstraints(pattern=TENANT_ID_PATTERN)]
# A service is named as in the settings (PLATFORM_DOWNSTREAM_SERVICES), so an unknown name is
# still answered by name, and no name carries a character a display would have to escape.
ServiceNameItem = Annotated[
    str,
    StringConstraints(
        pattern=DownstreamService.model_json_schema()["properties"]["name"]["pattern"]
    ),
]


class Selector(RequestModel):
    """Which tenants a rollout takes: every filter given must match (default: ACTIVE ones).
    ACTIVE takes MOVING tenants too: their calls wait until the move is over."""

    status: list[Annotated[TenantStatus, BY_VALUE]] = Field(
        default_factory=lambda: [TenantStatus.ACTIVE]
    )
    sla_tier: list[Annotated[SlaTier, BY_VALUE]] | None = None
    tenant_ids: list[TenantIdItem] | None = Field(default=None, max_length=10_000)


class WaveSpec(RequestModel):
    """One wave: the tenants that match its filter and no earlier wave took, the first `size`
    of them in a stable order when a size is given."""

    name: Annotated[str, StringConstraints(pattern=WAVE_NAME_PATTERN)]
    size: int | None = Field(default=None, ge=1, le=MAX_REQUEST_INT)
    sla_tier: list[Annotated[SlaTier, BY_VALUE]] | None = None
    tenant_ids: list[TenantIdItem] | None = Field(default=None, max_length=10_000)


class RolloutRequest(RequestModel):
    """Body of `POST /api/rollouts`; unset fields take the documented defaults."""

    services: list[ServiceNameItem] | None = Field(default=None, min_length=1)
    selector: Selector = Field(default_factory=Selector)
    waves: list[WaveSpec] | None = Field(default=None, min_length=1, max_length=20)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    max_failure_ratio: float | None = Field(default=None, ge=0, le=1)
    pause_after_each_wave: bool = False


class RolloutCounts(CamelModel):
    """Tenants of a rollout (or a wave) by their result."""

    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def finished(self) -> int:
        """Tenants that have a result."""
        return self.succeeded + self.failed + self.skipped


class WaveView(CamelModel):
    """One wave as the API shows it."""

    name: str
    status: WaveStatus
    counts: RolloutCounts


class RolloutFailure(CamelModel):
    """One tenant that failed, with the service that failed it."""

    tenant_id: str
    service: str | None = None
    error: str | None = None


class Rollout(CamelModel):
    """A rollout as the API shows it."""

    id: str
    status: RolloutStatus
    status_reason: str | None = None
    services: list[str]
    created_by: str
    created_at: datetime
    updated_at: datetime
    request: RolloutRequest
    counts: RolloutCounts
    waves: list[WaveView]
    failures: list[RolloutFailure]
    # 1, then one more for each retry-failed.
    pass_number: int = 1


class RolloutTenant(CamelModel):
    """One tenant's row in a rollout."""

    tenant_id: str
    wave: str
    status: RolloutTenantStatus
    service: str | None = None
    error: str | None = None
    updated_at: datetime


class RolloutEvent(CamelModel):
    """One entry of a rollout's audit trail."""

    id: int
    occurred_at: datetime
    actor: str
    action: RolloutAction
    reason: str | None = None


def halts(counts: RolloutCounts, wave_size: int, max_failure_ratio: float) -> bool:
    """Whether a wave's failures stop the rollout: its failed/finished ratio exceeds the limit,
    counted once at least min(10, wave size) of its tenants finished."""
    done = counts.succeeded + counts.failed
    if done == 0 or done < min(HALT_MIN_FINISHED, wave_size):
        return False
    return counts.failed / done > max_failure_ratio


def halts_since(
    counts: RolloutCounts, baseline: RolloutCounts | None, max_failure_ratio: float
) -> bool:
    """`halts` over what a wave finished since `baseline` (its counts when an operator last
    resumed it from a halt; none: since it began), the wave's size being the tenants that had
    no result then. The rule both the run (between batches) and a batch (before each tenant it
    starts) apply."""
    base = baseline or RolloutCounts()
    since = RolloutCounts(
        total=counts.total - base.finished,
        succeeded=counts.succeeded - base.succeeded,
        failed=counts.failed - base.failed,
    )
    return halts(since, since.total, max_failure_ratio)
