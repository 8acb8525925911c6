"""`kill -9` of the worker (a process of its own) while a move waits in each of its phases,
then a worker started again: the same run carries the move through, once.

The move is held in its phase by a lock the phase's step needs (tests.support.move_faults.
PhaseHold), the worker is killed there, the lock let go and a worker started again. The tenant
ends ACTIVE on its target with one TENANT_MOVED, and there is never a second copy the services
may write to: from the freeze on the source refuses them (while the worker is dead too), and
after the move it stays frozen, kept until its retention ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from tenancy.models import MovePhase
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger
from tests.support.api_client import api_client
from tests.support.move_faults import (
    PhaseHold,
    actions,
    add_held_table,
    move_worker_env,
    service_writes,
    tenant_becomes,
)
from tests.support.moves import move_run, move_stage
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# Every tier to pg-a; pg-b, of another pool, is the move's named target.
PLACEMENT = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"}
# The held table's rows: a dump and a verification of them take a moment, not seconds.
HELD_ROWS = 20_000
# The phases in which the source has been frozen (its revoke committed) when the worker dies.
FROZEN_BY = {MovePhase.COPYING, MovePhase.VERIFYING, MovePhase.SWITCHED}


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


@pytest.mark.parametrize("phase", list(MovePhase))
async def test_a_worker_killed_in_a_phase_of_a_move_is_followed_by_one_that_finishes_it(
    phase: MovePhase,
    tmp_path: Path,
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
    ledger: FaultLedger,
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
    tenant_id = unique_id("mvk")
    hold = PhaseHold(phase, tenant_id, source, target, settings.require_database_url())
    worker = worker_process(move_worker_env(settings, keys_dir), tmp_path)
    await worker.start()
    try:
        async with api_client(settings, keys_dir) as api, move_stage(settings) as stage:
            body = {"id": tenant_id, "name": "Kill", "storageMode": "SCHEMA", "slaTier": "BASIC"}
            assert (await api.post("/api/tenants", json=body)).status_code == 202
            assert (await tenant_becomes(api, tenant_id, "ACTIVE"))["storageServer"] == "pg-a"
            add_held_table(source, tenant_id, HELD_ROWS)
            epoch = await stage.epoch(tenant_id)
            await hold.take()
            try:
                asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
                assert asked.status_code == 202, asked.text
                waiting = await hold.reached(api)
                worker.kill()
                ledger.fault(f"worker kill -9 in a move's {phase.value}")
                source_writable_while_dead = await asyncio.to_thread(
                    service_writes, source, tenant_id
                )
            finally:
                await hold.release()
            await worker.start()
            moved = await tenant_becomes(api, tenant_id, "ACTIVE")
            trail = await actions(api, tenant_id)
            kept = await stage.retained(tenant_id)
            after_epoch = await stage.epoch(tenant_id)
            run = await move_run(temporal_client, tenant_id)
            await temporal_client.get_workflow_handle(run.id).result()
            run = await move_run(temporal_client, tenant_id)
    finally:
        worker.kill()

    assert (waiting["status"], waiting["move"]["phase"]) == ("MOVING", phase.value), waiting
    if phase in FROZEN_BY:
        assert not source_writable_while_dead
    assert (moved["storageServer"], moved["move"]) == ("pg-b", None), moved
    assert [a for a in trail if a in ("TENANT_MOVED", "MOVE_FAILED", "MOVE_CANCELLED")] == [
        "TENANT_MOVED"
    ]
    assert after_epoch == epoch + 2
    # One copy the services may use: the target; the source stays frozen, kept for its time.
    assert service_writes(target, tenant_id)
    assert not service_writes(source, tenant_id)
    assert [(k["server"], k["dropped_at"]) for k in kept] == [("pg-a", None)]
    assert run.status is WorkflowExecutionStatus.COMPLETED
    assert worker.starts == 2
