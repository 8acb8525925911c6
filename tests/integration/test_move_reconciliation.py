"""The reconciler's repair of a MOVING tenant whose move run is gone: it starts
`MoveTenantWorkflow` again, the new run reads the move on the row and finishes it. A move asked
a moment ago is left to the API that starts its run (twice PLATFORM_CREATE_TIMEOUT): restarting
it then would make the API's start fail, and the API roll the move back under the new run.
Real worker, real PostgreSQL servers on both sides (tests.support.move_fleet)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from tenancy.models import StorageMode
from tests.conftest import unique_id
from tests.support.api_client import api_client
from tests.support.move_fleet import (
    Services,
    actions,
    extra_server,
    other_server,
    provision,
    scripted_services,
    target_held,
    tenant_becomes,
    two_server_settings,
)
from tests.support.move_storage import fill_storage, storage_side, storage_snapshot
from tests.support.moves import move_run
from tests.support.polling import eventually
from tests.support.storage_fleet import FleetStage
from workflows.move.contracts import move_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# A move is the API's to start for twice this: 10 s, well past the first pass below.
CREATE_TIMEOUT = timedelta(seconds=5)


def repairs_of(report: Any, tenant_id: str) -> list[bool]:
    """`repaired` of the tenant's STUCK_WITHOUT_WORKFLOW drift in a reconciliation answer."""
    return [
        d["repaired"]
        for d in report.json()["drift"]
        if d["kind"] == "STUCK_WITHOUT_WORKFLOW" and d["tenantId"] == tenant_id
    ]


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with scripted_services() as found:
        yield found


async def test_the_reconciler_restarts_a_lost_move_run_and_the_move_completes(
    fleet_stage: FleetStage, services: Services, temporal_client: Client, keys_dir: Path
) -> None:
    settings = two_server_settings(fleet_stage, services, create_timeout=CREATE_TIMEOUT)
    tenant_id = unique_id("mvr")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        source = (await provision(api, tenant_id))["storageServer"]
        target = other_server(source)
        async with (
            storage_side(extra_server(fleet_stage, source)) as from_side,
            storage_side(extra_server(fleet_stage, target)) as to_side,
        ):
            at_source = from_side.admin.locate(tenant_id, StorageMode.SCHEMA)
            fill_storage(from_side, at_source)
            before = storage_snapshot(from_side, at_source)
            # The run waits in PREPARING on the held target while it is terminated.
            async with target_held(fleet_stage, tenant_id, target):
                asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": target})
                assert asked.status_code == 202, asked.text
                await temporal_client.get_workflow_handle(move_workflow_id(tenant_id)).terminate(
                    "lost"
                )
            lost = (await api.get(f"/api/tenants/{tenant_id}")).json()
            too_soon = await api.post("/api/admin/reconciliation")
            run_too_soon = await move_run(temporal_client, tenant_id)
            await eventually(
                lambda: api.post("/api/admin/reconciliation"),
                lambda report: repairs_of(report, tenant_id) == [True],
                timeout=60,
            )
            moved = await tenant_becomes(api, tenant_id, "ACTIVE")
            at_target = to_side.admin.locate(tenant_id, StorageMode.SCHEMA)
            after = storage_snapshot(to_side, at_target)
            trail = await actions(api, tenant_id)
            run = await move_run(temporal_client, tenant_id)

    assert (lost["status"], lost["move"]["toServer"]) == ("MOVING", target)
    assert too_soon.status_code == 200, too_soon.text
    assert repairs_of(too_soon, tenant_id) == [False]
    assert run_too_soon.status is WorkflowExecutionStatus.TERMINATED
    assert (moved["storageServer"], moved["move"]) == (target, None)
    assert after == before
    assert [a for a, _ in trail if a in ("MOVE_FAILED", "MOVE_CANCELLED", "TENANT_MOVED")] == [
        "TENANT_MOVED"
    ]
    assert run.status is WorkflowExecutionStatus.COMPLETED
