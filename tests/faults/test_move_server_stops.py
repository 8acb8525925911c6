"""A move's servers stopped under it, on PostgreSQL servers of the test's own (stopped and
started again; a worker behind the API runs the moves).

- The target stopped during COPYING: the move rolls back. The partial target cannot be dropped
  while its server is down, so the tenant stays MOVING with a statusReason saying why the
  rollback waits; once the server is back the rollback finishes: the tenant ACTIVE on its
  source (writable again), MOVE_FAILED, nothing left on the target.
- The source stopped after the switch: the tenant is ACTIVE on its target and served there;
  the kept source's drop waits for its server (and holds back no other tenant's drop), then
  happens once the server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from infra.db.moves import APPLICATION_NAME
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.api_client import api_client
from tests.support.move_faults import (
    actions,
    add_held_table,
    own_servers,
    server_entry,
    service_writes,
    table_locked,
    tenant_becomes,
    tenant_of,
    waiting_on_lock,
)
from tests.support.moves import move_stage
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage import storage_exists
from tests.support.storage_fleet import FleetStage, own_metadata_database, platform_url

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# BASIC tenants on pg-s, STANDARD ones on pg-t; a move names its target.
PLACEMENT = {"BASIC": "on-s", "STANDARD": "on-t", "PREMIUM": "on-s"}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[EmbeddedPostgres]]:
    with own_servers(tmp_path, 2) as started:
        yield started


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


def stop_settings(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    servers: list[EmbeddedPostgres],
    **overrides: object,
) -> Settings:
    return fleet_stage.make_settings(
        *services,
        database_url=own_metadata_database(fleet_stage.main),
        storage_servers=[
            server_entry("pg-s", servers[0].url, "on-s"),
            server_entry("pg-t", servers[1].url, "on-t"),
        ],
        placement=PLACEMENT,
        **overrides,
    )


def storage_on(server: EmbeddedPostgres, tenant_id: str) -> bool:
    return storage_exists(platform_url(server.url), tenant_id, "SCHEMA")


async def test_the_target_stopped_during_copying_rolls_the_move_back_once_it_is_back(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    servers: list[EmbeddedPostgres],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    source, target = servers
    settings = stop_settings(fleet_stage, services, servers)
    tenant_id = unique_id("mvt")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        body = {"id": tenant_id, "name": "Stop", "storageMode": "SCHEMA", "slaTier": "BASIC"}
        assert (await api.post("/api/tenants", json=body)).status_code == 202
        assert (await tenant_becomes(api, tenant_id, "ACTIVE"))["storageServer"] == "pg-s"
        add_held_table(source.url, tenant_id)
        # The copy's dump waits for the held table: the move stays in COPYING meanwhile.
        with table_locked(source.url, tenant_id):
            asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-t"})
            assert asked.status_code == 202, asked.text
            await eventually(
                lambda: asyncio.to_thread(waiting_on_lock, source.url, APPLICATION_NAME),
                lambda waiting: waiting > 0,
            )
            copying = await tenant_of(api, tenant_id)
            target.stop()
        waiting = await eventually(
            lambda: tenant_of(api, tenant_id),
            lambda t: "waiting" in (t.get("statusReason") or ""),
            timeout=120,
        )
        # Unfrozen already: the source is the one copy the services may write to.
        source_writable_while_waiting = service_writes(source.url, tenant_id)
        target.start()
        after = await tenant_becomes(api, tenant_id, "ACTIVE")
        trail = await actions(api, tenant_id)

    assert copying["move"]["phase"] == "COPYING", copying
    assert (waiting["status"], waiting["storageServer"]) == ("MOVING", "pg-s"), waiting
    assert "copying failed" in waiting["statusReason"], waiting
    assert source_writable_while_waiting
    assert (after["storageServer"], after["move"]) == ("pg-s", None), after
    assert "copying failed" in (after["statusReason"] or ""), after
    assert [a for a in trail if a in ("MOVE_FAILED", "TENANT_MOVED")] == ["MOVE_FAILED"]
    assert storage_on(source, tenant_id)
    assert service_writes(source.url, tenant_id)
    assert not storage_on(target, tenant_id)


async def test_the_source_stopped_after_the_switch_leaves_the_tenant_served_on_its_target(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    servers: list[EmbeddedPostgres],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    source, target = servers
    # Long enough to stop the source before the kept storage is due.
    retention = timedelta(seconds=6)
    settings = stop_settings(fleet_stage, services, servers, move_source_retention=retention)
    moved_id, back_id = unique_id("mvs"), unique_id("mvb")
    async with (
        api_client(settings, keys_dir, temporal=temporal_client) as api,
        move_stage(settings) as stage,
    ):
        for tenant_id, tier in ((moved_id, "BASIC"), (back_id, "STANDARD")):
            body = {"id": tenant_id, "name": "Stop", "storageMode": "SCHEMA", "slaTier": tier}
            assert (await api.post("/api/tenants", json=body)).status_code == 202
            await tenant_becomes(api, tenant_id, "ACTIVE")
        # One tenant from the source to the target, another the other way, later: its kept
        # storage on the target is due after the first one's on the source.
        for tenant_id, to in ((moved_id, "pg-t"), (back_id, "pg-s")):
            asked = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": to})
            assert asked.status_code == 202, asked.text
            moved = await tenant_becomes(api, tenant_id, "ACTIVE")
            assert moved["storageServer"] == to, moved
        source.stop()
        # The other tenant's kept storage is dropped although the first one's server is away.
        await eventually(
            lambda: stage.retained(back_id),
            lambda kept: len(kept) == 1 and kept[0]["dropped_at"] is not None,
            timeout=60,
        )
        back_source_left = storage_on(target, back_id)
        while_down = await tenant_of(api, moved_id)
        location = (await api.get(f"/api/tenants/{moved_id}/location")).json()
        served_on_target = service_writes(target.url, moved_id)
        kept_while_down = await stage.retained(moved_id)
        source.start()
        dropped = await eventually(
            lambda: stage.retained(moved_id),
            lambda kept: len(kept) == 1 and kept[0]["dropped_at"] is not None,
            timeout=60,
        )

    assert not back_source_left
    assert (while_down["status"], while_down["storageServer"]) == ("ACTIVE", "pg-t"), while_down
    assert location["jdbcUrl"] == while_down["jdbcUrl"]
    assert served_on_target
    assert [k["dropped_at"] for k in kept_while_down] == [None]
    assert dropped[0]["server"] == "pg-s"
    assert not storage_on(source, moved_id)
    # The tenant that moved onto the stopped server is there, whole, once it is back.
    assert storage_on(source, back_id)
