"""Tenant moves for real: a worker runs `MoveTenantWorkflow` between two embedded PostgreSQL
servers (`fleet_stage`'s extra ones, `pg-a` and `pg-b`, one pool), with the services' objects
and rows in the tenant's storage (tests.support.move_storage).

A move carries everything over and the row follows (epoch, events, the source kept frozen, then
dropped); a copy that fails rolls back with the source serving again; a cancel before the
switch rolls back too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from infra.db.storage import lock_storage
from infra.db.tenant_moves import MoveRepository
from tenancy.models import StorageLocation, StorageMode
from tenancy.moves import rollback_reason
from tests.conftest import unique_id
from tests.support.api_client import api_client
from tests.support.move_fleet import (
    Services,
    actions,
    provision,
    scripted_services,
    tenant_becomes,
    two_server_settings,
)
from tests.support.move_storage import (
    BACKEND,
    FILLED_ROWS,
    StorageSide,
    as_service,
    fill_storage,
    qualified,
    storage_side,
    storage_snapshot,
)
from tests.support.polling import eventually
from tests.support.storage import storage_exists
from tests.support.storage_fleet import FleetStage, platform_url
from workflows.move.starts import start as start_move

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with scripted_services() as urls:
        yield urls


@pytest.fixture
async def sides(fleet_stage: FleetStage) -> AsyncIterator[tuple[StorageSide, StorageSide]]:
    async with storage_side(fleet_stage.extra[0]) as a, storage_side(fleet_stage.extra[1]) as b:
        yield a, b


def service_refused(side: StorageSide, location: StorageLocation) -> bool:
    """Whether the backend service's role is refused the tenant's storage on `side`."""
    try:
        with as_service(side, BACKEND, location) as conn:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(location, "orders")))
    except psycopg.Error:
        return True
    return False


def service_writes(side: StorageSide, location: StorageLocation) -> int:
    """The backend service adds an order note on `side`; the notes it then counts."""
    with as_service(side, BACKEND, location) as conn:
        notes = qualified(location, "order_notes")
        conn.execute(sql.SQL("INSERT INTO {} VALUES (3, 'after')").format(notes))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(notes)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("mode", ["SCHEMA", "DATABASE"])
async def test_a_tenant_moves_with_everything_in_its_storage_and_its_row_follows(
    mode: str,
    fleet_stage: FleetStage,
    services: Services,
    sides: tuple[StorageSide, StorageSide],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    side_a, side_b = sides
    settings = two_server_settings(
        fleet_stage, services, move_source_retention=timedelta(seconds=4)
    )
    tenant_id = unique_id("mov")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        active = await provision(api, tenant_id, mode)
        at_a = side_a.admin.locate(tenant_id, StorageMode(mode))
        fill_storage(side_a, at_a)
        before = storage_snapshot(side_a, at_a)
        epoch = (await api.get(f"/api/tenants/{tenant_id}/location")).json()["epoch"]

        asked = await api.post(
            f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b", "reason": "noisy"}
        )
        assert asked.status_code == 202, asked.text
        moved = await tenant_becomes(api, tenant_id, "ACTIVE")
        at_b = side_b.admin.locate(tenant_id, StorageMode(mode))
        source_refused = service_refused(side_a, at_a)
        location = (await api.get(f"/api/tenants/{tenant_id}/location")).json()
        trail = await actions(api, tenant_id)
        # The kept source is dropped once its retention (4 s) is over.
        await eventually(
            lambda: asyncio.to_thread(
                storage_exists, platform_url(side_a.superuser_url), tenant_id, mode
            ),
            lambda exists: not exists,
            timeout=60,
        )
        run = await temporal_client.get_workflow_handle(f"tenant-move-{tenant_id}").describe()

    assert asked.json()["status"] == "MOVING"
    assert (moved["storageServer"], moved["move"]) == ("pg-b", None)
    assert moved["jdbcUrl"] == at_b.jdbc_url != active["jdbcUrl"]
    assert storage_snapshot(side_b, at_b) == before
    assert service_writes(side_b, at_b) == FILLED_ROWS["order_notes"] + 1
    assert source_refused
    # MOVING raised it once, the switch (server, jdbcUrl, status in one update) once more.
    assert location["epoch"] == epoch + 2
    assert ("MOVE_REQUESTED", "pg-a -> pg-b: noisy") in trail
    assert ("TENANT_MOVED", "pg-a -> pg-b") in [(a, r) for a, r in trail if a == "TENANT_MOVED"]
    assert run.typed_search_attributes is not None
    assert [p.value for p in run.typed_search_attributes if p.key.name == "MovePhase"] == [
        "SWITCHED"
    ]


async def test_a_copy_that_fails_rolls_the_move_back_and_the_source_serves_again(
    fleet_stage: FleetStage,
    services: Services,
    sides: tuple[StorageSide, StorageSide],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    side_a, _ = sides
    settings = two_server_settings(fleet_stage, services)
    tenant_id = unique_id("mvf")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        await provision(api, tenant_id, "SCHEMA")
        at_a = side_a.admin.locate(tenant_id, StorageMode.SCHEMA)
        fill_storage(side_a, at_a)
        # Row security on a service's table: pg_dump refuses to dump a part of it.
        with as_service(side_a, BACKEND, at_a) as conn:
            conn.execute(
                sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(
                    qualified(at_a, "order_notes")
                )
            )
        asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
        assert asked.status_code == 202, asked.text
        after = await tenant_becomes(api, tenant_id, "ACTIVE")
        trail = await actions(api, tenant_id)

    assert (after["storageServer"], after["move"]) == ("pg-a", None)
    failed = [reason for action, reason in trail if action == "MOVE_FAILED"]
    assert len(failed) == 1
    assert failed[0] is not None
    assert "copying failed" in failed[0]
    assert service_writes(side_a, at_a) == FILLED_ROWS["order_notes"] + 1
    assert not storage_exists(platform_url(fleet_stage.extra[1]), tenant_id, "SCHEMA")


async def test_a_move_cancelled_before_its_switch_is_rolled_back(
    fleet_stage: FleetStage,
    services: Services,
    sides: tuple[StorageSide, StorageSide],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    side_a, side_b = sides
    settings = two_server_settings(fleet_stage, services)
    tenant_id = unique_id("mvc")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        await provision(api, tenant_id, "SCHEMA")
        at_a = side_a.admin.locate(tenant_id, StorageMode.SCHEMA)
        fill_storage(side_a, at_a)
        at_b = side_b.admin.locate(tenant_id, StorageMode.SCHEMA)
        # The target's storage lock held: the move waits in PREPARING until it is released.
        async with await psycopg.AsyncConnection.connect(
            side_b.platform_url, autocommit=True
        ) as holder:
            await lock_storage(holder, at_b.schema_name, session=True)
            asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
            assert asked.status_code == 202, asked.text
            cancelled = await api.post(f"/api/tenants/{tenant_id}/cancel-move")
        after = await tenant_becomes(api, tenant_id, "ACTIVE")
        trail = await actions(api, tenant_id)
        again = await api.post(f"/api/tenants/{tenant_id}/cancel-move")

    assert cancelled.status_code == 202, cancelled.text
    assert (after["storageServer"], after["move"]) == ("pg-a", None)
    assert [a for a, _ in trail if a in ("MOVE_CANCELLED", "MOVE_FAILED", "TENANT_MOVED")] == [
        "MOVE_CANCELLED"
    ]
    assert again.status_code == 409
    assert service_writes(side_a, at_a) == FILLED_ROWS["order_notes"] + 1
    assert not storage_exists(platform_url(fleet_stage.extra[1]), tenant_id, "SCHEMA")


async def test_a_run_started_over_a_rollback_under_way_finishes_it_and_never_moves(
    fleet_stage: FleetStage,
    services: Services,
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    settings = two_server_settings(fleet_stage, services)
    tenant_id = unique_id("mvr")
    async with (
        AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool,
        api_client(settings, keys_dir, temporal=temporal_client) as api,
    ):
        await provision(api, tenant_id, "SCHEMA")
        moves = MoveRepository(pool)
        await moves.begin(
            tenant_id, "op", None, "pg-b", settings.storage_fleet(), settings.placement_map()
        )
        # What a run that began rolling a cancelled move back, then died, leaves on the row.
        await moves.set_status_reason(tenant_id, rollback_reason("cancelled by op", cancelled=True))
        handle = await start_move(temporal_client, tenant_id, "reconciler", settings.task_queue)
        await handle.result()
        after = await tenant_becomes(api, tenant_id, "ACTIVE")
        trail = await actions(api, tenant_id)
        history = await handle.fetch_history()

    assert (after["storageServer"], after["statusReason"]) == ("pg-a", "cancelled by op")
    assert [a for a, _ in trail if a in ("MOVE_CANCELLED", "MOVE_FAILED", "TENANT_MOVED")] == [
        "MOVE_CANCELLED"
    ]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "prepare_move_target" not in scheduled
    assert "undo_move_storage" in scheduled
    assert not storage_exists(platform_url(fleet_stage.extra[1]), tenant_id, "SCHEMA")
