"""Inputs and results of `FleetRolloutWorkflow` and its activities. The rollout's tenants are
never in a payload: the workflow carries positions and counts, the tables hold the tenants."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from tenancy.models import CamelModel
from tenancy.rollouts import RolloutCounts, RolloutStatus, WaveStatus

# The names operators' scripts and the API address the workflow by (docs/concepts/workflows.md).
WORKFLOW_NAME = "FleetRolloutWorkflow"
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
CANCEL_SIGNAL = "cancel"
PROGRESS_QUERY = "progress"


def rollout_workflow_id(rollout_id: str) -> str:
    """The rollout's workflow id."""
    return f"rollout-{rollout_id}"


def rollout_task_queue(base_task_queue: str) -> str:
    """The rollouts' own task queue, so a rollout never takes provisioning's worker slots."""
    return f"{base_task_queue}.rollouts"


class CallPolicy(CamelModel):
    """How hard each tenant's call to a service is tried within a batch."""

    max_attempts: int
    initial_interval: timedelta
    timeout: timedelta


class RolloutInput(CamelModel):
    """Start argument of `FleetRolloutWorkflow`, and what a continued run carries."""

    rollout_id: str
    services: list[str]
    waves: int
    # The waves' names, in order, for the reasons the rollout shows (empty: their positions).
    wave_names: list[str] = Field(default_factory=list)
    concurrency: int
    max_failure_ratio: float
    pause_after_each_wave: bool = False
    requested_by: str
    call: CallPolicy
    # Where a continued run starts: the wave, the next batch number, and the counts of the
    # current wave when its halting was last acknowledged (resume).
    wave: int = 0
    batch: int = 1
    halt_baseline: RolloutCounts | None = None
    counts: dict[int, RolloutCounts] = Field(default_factory=dict)
    # When the rollout's first run started (a continued run's duration metric spans them all);
    # unset in a first run.
    started_at: datetime | None = None


class RolloutSignal(CamelModel):
    """Argument of the pause, resume and cancel signals (optional for automation)."""

    requested_by: str = "signal"
    reason: str | None = None


class RolloutProgress(CamelModel):
    """Answer of the `progress` query."""

    rollout_id: str
    status: RolloutStatus = RolloutStatus.RUNNING
    wave: int = 0
    batch: int = 1
    waves: dict[int, RolloutCounts] = Field(default_factory=dict)


class BatchInput(CamelModel):
    """Argument of `run_rollout_batch`: claim up to `limit` tenants of `wave` and call them."""

    rollout_id: str
    wave: int
    batch: int
    limit: int
    services: list[str]
    concurrency: int
    call: CallPolicy
    # The halt rule the batch applies before starting each tenant (unset: a batch scheduled by
    # a run from before it did; the run still checks between batches).
    max_failure_ratio: float | None = None
    halt_baseline: RolloutCounts | None = None


class BatchResult(CamelModel):
    """What a batch did, the wave's counts after it, and the rollout's status in the table."""

    claimed: int
    counts: RolloutCounts
    rollout_status: RolloutStatus


class RolloutStatusInput(CamelModel):
    """Argument of `set_rollout_status`."""

    rollout_id: str
    target: RolloutStatus
    actor: str
    reason: str | None = None


class RolloutStatusResult(CamelModel):
    """The status the rollout has after the change (unchanged when it was refused)."""

    status: RolloutStatus
    applied: bool


class WaveInput(CamelModel):
    """Argument of `set_wave_status`."""

    rollout_id: str
    wave: int
    status: WaveStatus
