"""Every recorded history must replay against today's workflow code.

A failure here means a change would break runs already in flight: guard it with
`workflow.patched(...)` (see docs/development/workflows.md) instead of editing histories.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.delete.workflow import DeleteTenantWorkflow
from workflows.drain.workflow import DrainServerWorkflow
from workflows.move.workflow import MoveTenantWorkflow
from workflows.provision.workflow import ProvisionTenantWorkflow
from workflows.rollout.workflow import FleetRolloutWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    assert {p.stem.rsplit("_", 1)[0] for p in HISTORIES} >= {
        "active_schema",
        "active_database",
        "created_schema",
        "retry_after_rejection",
        "continued_as_new",
        "resumed_after_continue_as_new",
        "retried_by_update",
        "cancelled_waiting",
        "adopted_after_terminate",
        "deleted_with_backup",
        "deletion_restored",
        "deletion_retried_by_update",
        "deletion_cancelled_waiting",
        "rollout_two_waves",
        "rollout_halted_resumed",
        "rollout_paused_resumed",
        "rollout_cancelled",
        "move_completed",
        "move_rolled_back",
        "move_cancelled",
        "drain_three_tenants",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    raw = path.read_text()
    workflow_id = json.loads(raw)["events"][0]["workflowExecutionStartedEventAttributes"].get(
        "workflowId", path.stem
    )
    history = WorkflowHistory.from_json(workflow_id, raw)
    # The SDK's full sandbox on purpose: the worker passes every module through
    # (worker.WORKFLOW_RUNNER), so this is where a workflow reaching outside it is caught.
    replayer = Replayer(
        workflows=[
            ProvisionTenantWorkflow,
            DeleteTenantWorkflow,
            FleetRolloutWorkflow,
            MoveTenantWorkflow,
            DrainServerWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
