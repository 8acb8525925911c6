"""How clients start `FleetRolloutWorkflow`, by name, importing no workflow or activity code: its
input built from a rollout's stored request (the API's start and retry-failed) or from its rows
(the reconciler's resumption), and one set of policies.

A rollout's run has the id `rollout-{id}`. A new run may start only when no run of it is open
(conflict policy FAIL); a closed run does not stop one (reuse policy ALLOW_DUPLICATE): retry-failed
and the reconciler run the same rollout again. Each start names itself in the run's memo, so a
client that lost the answer can ask whether its own start was accepted.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from tenancy.rollouts import RolloutCounts, RolloutRequest
from tenancy.settings import Settings
from workflows.rollout.contracts import (
    WORKFLOW_NAME,
    CallPolicy,
    RolloutInput,
    RolloutProgress,
    rollout_task_queue,
    rollout_workflow_id,
)

START_REQUEST_MEMO = "startRequest"

_POLICIES: dict[str, Any] = {
    "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
    "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
}


def rollout_input(
    rollout_id: str, request: RolloutRequest, settings: Settings, actor: str
) -> RolloutInput:
    """The input of a run over the rollout from its first wave; `request` has its defaults
    filled in (as it is stored)."""
    if (
        request.services is None
        or request.waves is None
        or request.concurrency is None
        or request.max_failure_ratio is None
    ):
        raise ValueError(f"rollout {rollout_id}'s request lacks its defaults")
    return RolloutInput(
        rollout_id=rollout_id,
        services=request.services,
        waves=len(request.waves),
        wave_names=[wave.name for wave in request.waves],
        concurrency=request.concurrency,
        max_failure_ratio=request.max_failure_ratio,
        pause_after_each_wave=request.pause_after_each_wave,
        requested_by=actor,
        call=CallPolicy(
            max_attempts=settings.migration_max_attempts,
            initial_interval=settings.migration_initial_interval,
            timeout=settings.migration_timeout,
        ),
    )


def resumption(
    rollout_id: str,
    request: RolloutRequest,
    settings: Settings,
    actor: str,
    *,
    wave: int,
    batch: int,
    counts: dict[int, RolloutCounts],
    halt_baseline: RolloutCounts | None,
) -> RolloutInput:
    """The input of a run that goes on where the rows say the rollout stands: at `wave`, with
    batch numbers from `batch` (a retried batch takes back the rows it claimed), the waves'
    `counts` so far, and the halt already acknowledged in the current wave, if any."""
    return rollout_input(rollout_id, request, settings, actor).model_copy(
        update={"wave": wave, "batch": batch, "counts": counts, "halt_baseline": halt_baseline}
    )


async def start(
    client: Client, run: RolloutInput, settings: Settings, start_request: str
) -> WorkflowHandle[Any, RolloutProgress]:
    """Start a run of the rollout, named `start_request` in its memo; `WorkflowAlreadyStartedError`
    when one is open."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        run,
        id=rollout_workflow_id(run.rollout_id),
        task_queue=rollout_task_queue(settings.task_queue),
        result_type=RolloutProgress,
        memo={START_REQUEST_MEMO: start_request},
        **_POLICIES,
    )
