"""The move's run cancelled (Temporal's cancel, as an operator's `temporal workflow cancel`)
while its switch is under way: the switch is finished first, so the tenant ends ACTIVE on its
target, not MOVING on a frozen source with no run left to carry the move on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from tenancy.models import MovePhase
from tests.conftest import unique_id
from tests.support.api_client import api_client
from tests.support.move_faults import PhaseHold, add_held_table, service_writes, tenant_becomes
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage
from workflows.move.contracts import move_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PLACEMENT = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"}


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


async def cancel_delivered(handle: WorkflowHandle[object, object]) -> bool:
    """Whether the run has taken its cancellation in (a workflow task completed after the
    request), or has closed."""
    if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
        return True
    requested = False
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            requested = True
        elif requested and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return True
    return False


async def test_a_run_cancelled_during_its_switch_finishes_the_switch(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    settings = fleet_stage.settings(
        services,
        [
            fleet_stage.server("pg-a", 1, "shared", 10),
            fleet_stage.server("pg-b", 2, "spare", 10),
        ],
        PLACEMENT,
    )
    source, target = fleet_stage.extra
    tenant_id = unique_id("mvx")
    hold = PhaseHold(MovePhase.SWITCHED, tenant_id, source, target, settings.require_database_url())
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        body = {"id": tenant_id, "name": "Cut", "storageMode": "SCHEMA", "slaTier": "BASIC"}
        assert (await api.post("/api/tenants", json=body)).status_code == 202
        await tenant_becomes(api, tenant_id, "ACTIVE")
        add_held_table(source, tenant_id)
        handle = temporal_client.get_workflow_handle(move_workflow_id(tenant_id))
        await hold.take()
        try:
            asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
            assert asked.status_code == 202, asked.text
            await hold.reached(api)
            await handle.cancel()
            await eventually(lambda: cancel_delivered(handle), bool, timeout=60, interval=0.2)
        finally:
            await hold.release()
        closed = await eventually(
            handle.describe, lambda d: d.status is not WorkflowExecutionStatus.RUNNING, timeout=60
        )
        after = await api.get(f"/api/tenants/{tenant_id}")

    tenant = after.json()
    assert (tenant["status"], tenant["storageServer"], tenant["move"]) == (
        "ACTIVE",
        "pg-b",
        None,
    ), tenant
    assert closed.status is WorkflowExecutionStatus.CANCELED
    assert service_writes(target, tenant_id)
    assert not service_writes(source, tenant_id)
