"""Rollouts and moves of one tenant keep out of each other's way, for real (a worker, two of
`fleet_stage`'s servers): a rollout does not start a MOVING tenant's calls, waits, and takes it
on the server the move ended on; a move does not freeze a tenant's storage under a rollout's
call in flight, and goes on once the call is answered."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.rollouts import MOVING_REASON
from infra.db.tenant_moves import MoveRepository
from tenancy.models import RetainedSource, StorageMode
from tenancy.settings import Settings
from tests.support.api_client import api_client
from tests.support.move_fleet import provision, tenant_becomes, two_server_settings
from tests.support.move_storage import BACKEND, as_service, storage_side
from tests.support.polling import eventually
from tests.support.rollouts import rollout_reaches
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def backend() -> Iterator[tuple[ScriptedService, str]]:
    service = ScriptedService(version="backend-1")
    with serve(service.app()) as url:
        yield service, url


def fleet_settings(fleet_stage: FleetStage, url: str) -> Settings:
    return two_server_settings(fleet_stage, (("backend-service", url),))


async def waiting_for_move(api: httpx.AsyncClient, rollout_id: str) -> bool:
    """Whether the rollout shows its tenant pending, waiting for the tenant's move."""
    answer = await api.get(f"/api/rollouts/{rollout_id}/tenants")
    if answer.status_code != 200:
        return False
    return [(t["status"], t["error"]) for t in answer.json()["items"]] == [
        ("PENDING", MOVING_REASON)
    ]


async def test_a_rollout_waits_for_a_moving_tenant_and_calls_it_on_its_new_server(
    fleet_stage: FleetStage,
    backend: tuple[ScriptedService, str],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    service, url = backend
    settings = fleet_settings(fleet_stage, url)
    tenant_id = f"rmv{uuid.uuid4().hex[:8]}"
    async with (
        AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool,
        api_client(settings, keys_dir, temporal=temporal_client) as api,
    ):
        await provision(api, tenant_id)
        moves = MoveRepository(pool)
        # MOVING with no run: this test plays the move's switch itself.
        await moves.begin(
            tenant_id, "test", None, "pg-b", settings.storage_fleet(), settings.placement_map()
        )
        service.version = "backend-2"
        started = await api.post(
            "/api/rollouts", json={"selector": {"tenantIds": [tenant_id]}, "concurrency": 1}
        )
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        await eventually(lambda: waiting_for_move(api, rollout_id), bool, timeout=30)
        calls_while_moving = len(service.calls_for(tenant_id))
        target = (await api.get(f"/api/tenants/{tenant_id}")).json()
        async with storage_side(fleet_stage.extra[1]) as side_b:
            at_b = side_b.admin.locate(tenant_id, StorageMode.SCHEMA)
        await moves.switch(
            tenant_id,
            "pg-b",
            at_b.jdbc_url,
            RetainedSource(
                tenant_id=tenant_id,
                server="pg-a",
                mode=StorageMode.SCHEMA,
                database=at_b.database,
                schema_name=at_b.schema_name,
                drop_after=datetime.now(UTC) + timedelta(hours=1),
            ),
        )
        done = await rollout_reaches(api, rollout_id, "SUCCEEDED", "FAILED")

    assert target["status"] == "MOVING"
    # Only provisioning's call while the tenant was MOVING.
    assert calls_while_moving == 1
    assert done["status"] == "SUCCEEDED", done
    rollout_call = service.calls_for(tenant_id)[-1]
    assert (rollout_call.idempotency_key or "").startswith(f"rollout-{rollout_id}/")
    assert rollout_call.body["jdbcUrl"] == at_b.jdbc_url


async def test_a_move_does_not_freeze_a_tenant_under_a_rollout_call_in_flight(
    fleet_stage: FleetStage,
    backend: tuple[ScriptedService, str],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    service, url = backend
    settings = fleet_settings(fleet_stage, url)
    tenant_id = f"rmf{uuid.uuid4().hex[:8]}"
    async with (
        api_client(settings, keys_dir, temporal=temporal_client) as api,
        storage_side(fleet_stage.extra[0]) as side_a,
    ):
        await provision(api, tenant_id)
        at_a = side_a.admin.locate(tenant_id, StorageMode.SCHEMA)
        with as_service(side_a, BACKEND, at_a) as conn:
            conn.execute("CREATE TABLE ledger (entry int)")
        gate = service.hold(tenant_id)
        service.version = "backend-2"
        started = await api.post(
            "/api/rollouts", json={"selector": {"tenantIds": [tenant_id]}, "concurrency": 1}
        )
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        # The rollout's call has arrived and is held.
        await eventually(lambda: _count(service, tenant_id), lambda n: n == 2, timeout=30)
        asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
        assert asked.status_code == 202, asked.text
        # The freeze step has begun (and heartbeated) but waits for the call.
        await eventually(lambda: _freeze_running(temporal_client, tenant_id), bool, timeout=30)
        with as_service(side_a, BACKEND, at_a) as conn:
            # Refused once frozen (its schema's USAGE revoked).
            conn.execute("INSERT INTO ledger VALUES (1)")
            usable_during_call = True
        gate.set()
        done = await rollout_reaches(api, rollout_id, "SUCCEEDED", "FAILED")
        moved = await tenant_becomes(api, tenant_id, "ACTIVE")

    assert usable_during_call
    assert done["status"] == "SUCCEEDED", done
    assert moved["storageServer"] == "pg-b"
    assert service.calls_for(tenant_id)[-1].body["jdbcUrl"] == at_a.jdbc_url


async def _count(service: ScriptedService, tenant_id: str) -> int:
    return len(service.calls_for(tenant_id))


async def _freeze_running(client: Client, tenant_id: str) -> bool:
    try:
        description = await client.get_workflow_handle(f"tenant-move-{tenant_id}").describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return any(
        a.activity_type.name == "freeze_move_source" and a.HasField("last_heartbeat_time")
        for a in description.raw_description.pending_activities
    )
