"""What a list of rollouts shows of each: its status and counts, and its request summarised (each
tenant-id list replaced by how many ids it names); `GET /api/rollouts/{id}` has the whole
request and the first failures."""

from __future__ import annotations

from datetime import datetime

from tenancy.models import CamelModel, SlaTier
from tenancy.rollouts import RolloutCounts, RolloutStatus, WaveView
from tenancy.status import TenantStatus


class SelectorSummary(CamelModel):
    """A rollout's selector without its `tenantIds`."""

    status: list[TenantStatus]
    sla_tier: list[SlaTier] | None = None
    # How many ids `selector.tenantIds` names; null when the request named none.
    tenant_id_count: int | None = None


class WaveSpecSummary(CamelModel):
    """A wave as the request asked for it, without its `tenantIds`."""

    name: str
    size: int | None = None
    sla_tier: list[SlaTier] | None = None
    # How many ids the wave's `tenantIds` names; null when it named none.
    tenant_id_count: int | None = None


class RolloutRequestSummary(CamelModel):
    """A rollout's stored request (defaults filled in) with its tenant-id lists as counts."""

    services: list[str] | None = None
    selector: SelectorSummary
    waves: list[WaveSpecSummary] | None = None
    concurrency: int | None = None
    max_failure_ratio: float | None = None
    pause_after_each_wave: bool = False


class RolloutSummary(CamelModel):
    """One rollout in a list: the fields of a rollout but `failures`, and its request summarised."""

    id: str
    status: RolloutStatus
    status_reason: str | None = None
    services: list[str]
    created_by: str
    created_at: datetime
    updated_at: datetime
    request: RolloutRequestSummary
    counts: RolloutCounts
    waves: list[WaveView]
    pass_number: int = 1
