"""Server drains for real: a worker runs `DrainServerWorkflow`, which moves the tenants of a
server (on `fleet_stage`'s first extra PostgreSQL server) by placement onto the other entries of
its pool (on the second extra server and the session's), each move a `MoveTenantWorkflow` child.

A drain empties its server (DRAINED), a cancel lets the move in flight finish and leaves it
CORDONED, a tenant with nowhere to go leaves it DRAINING with its failure until a new drain
moves it; placement and moves never pick a DRAINING or DRAINED server, and a DRAINED server may
leave the settings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.moves import MoveActivities
from infra.db.drains import DrainRepository
from infra.db.fleet import StorageFleet
from infra.db.rollouts import RolloutRepository
from infra.db.schema import apply_platform_migrations
from infra.db.server_checks import FleetMismatch, refuse_missing_servers
from infra.db.storage import lock_storage
from infra.db.tenant_moves import MoveTargetRefused
from tenancy.fleet import ServerState
from tenancy.models import RetainedSource, SlaTier, StorageMode
from tenancy.naming import storage_location
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.support.api_client import api_client, token_of
from tests.support.drains import (
    ONE_POOL,
    drain_ends,
    progress,
    provision_onto,
    server_events,
    server_of,
    tenant_becomes,
    tenant_of,
)
from tests.support.move_storage import storage_side
from tests.support.moves import move_stage, roll_back_migration
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage
from workflows.drain.contracts import drain_workflow_id
from workflows.drain.workflow import DrainServerWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


def names(*prefixes: str) -> list[str]:
    """Server names no other test uses (a drain's run id is its server's name)."""
    suffix = uuid.uuid4().hex[:8]
    return [f"{prefix}-{suffix}" for prefix in prefixes]


def fleet(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    entries: list[tuple[str, int, int]],
) -> Settings:
    """Entries (name, server index, maxTenants) of one pool, over a metadata database of the
    test's own."""
    return fleet_stage.settings(
        services,
        [fleet_stage.server(name, index, "shared", room) for name, index, room in entries],
        ONE_POOL,
    )


async def test_a_drain_moves_every_tenant_off_and_leaves_the_server_drained(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    source, one, other = names("da", "db", "dc")
    settings = fleet(fleet_stage, services, [(source, 1, 10), (one, 2, 10), (other, 0, 10)])
    tenant_ids = sorted(unique_id("drn") for _ in range(3))
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        await provision_onto(api, source, [one, other], tenant_ids)
        asked = await api.post(
            f"/api/storage-servers/{source}/drain", json={"concurrency": 2, "reason": "retired"}
        )
        assert asked.status_code == 202, asked.text
        drained = await drain_ends(api, source)
        tenants = [await tenant_of(api, tenant_id) for tenant_id in tenant_ids]
        listed = (await api.get("/api/storage-servers")).json()["items"]
        events = await server_events(api, source)
        again = await api.post(f"/api/storage-servers/{source}/drain")
        cancel = await api.post(f"/api/storage-servers/{source}/cancel-drain")
        history = await temporal_client.get_workflow_handle(
            drain_workflow_id(source)
        ).fetch_history()

    assert asked.json()["state"] == "DRAINING"
    assert asked.json()["drain"]["reason"] == "retired"
    assert drained["state"] == "DRAINED", drained
    assert (drained["tenants"], progress(drained)) == (0, (3, 3, 0, 0))
    assert drained["drain"]["failures"] == []
    assert [t["status"] for t in tenants] == ["ACTIVE"] * 3
    # Placement by fewest tenants (the moves on their way counted) spreads them over both.
    assert {t["storageServer"] for t in tenants} == {one, other}
    assert [s["drain"] for s in listed if s["name"] == source] == [drained["drain"]]
    assert events[-2:] == ["DRAIN_STARTED", "DRAINED"]
    assert (again.status_code, again.json()["serverState"]) == (409, "DRAINED")
    assert (cancel.status_code, cancel.json()["serverState"]) == (409, "DRAINED")

    # A DRAINED server may leave the settings; one with tenants may not.
    async with move_stage(settings) as stage:
        await refuse_missing_servers(
            [s for s in settings.storage_fleet() if s.name != source], stage.servers
        )
        with pytest.raises(FleetMismatch, match=one):
            await refuse_missing_servers(
                [s for s in settings.storage_fleet() if s.name != one], stage.servers
            )

    # The run replays in the SDK's full sandbox (what tests/test_replay.py does with files).
    (tmp_path / "drain_history.json").write_text(history.to_json())
    replayer = Replayer(workflows=[DrainServerWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_cancel_drain_lets_the_move_in_flight_finish_and_leaves_the_server_cordoned(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    source, target = names("ca", "cb")
    settings = fleet(fleet_stage, services, [(source, 1, 10), (target, 2, 10)])
    first, *rest = tenant_ids = sorted(unique_id("drc") for _ in range(3))
    async with (
        api_client(settings, keys_dir, temporal=temporal_client) as api,
        storage_side(fleet_stage.extra[1]) as side_b,
    ):
        await provision_onto(api, source, [target], tenant_ids)
        at_target = side_b.admin.locate(first, StorageMode.SCHEMA)
        # The first move's target storage locked: it waits in PREPARING until released.
        async with await psycopg.AsyncConnection.connect(
            side_b.platform_url, autocommit=True
        ) as holder:
            await lock_storage(holder, at_target.schema_name, session=True)
            asked = await api.post(f"/api/storage-servers/{source}/drain", json={"concurrency": 1})
            assert asked.status_code == 202, asked.text
            moving = await tenant_becomes(api, first, "MOVING")
            running = await eventually(
                lambda: server_of(api, source), lambda s: s["drain"]["running"] == 1
            )
            twice = await api.post(f"/api/storage-servers/{source}/drain")
            cordon = await api.post(f"/api/storage-servers/{source}/cordon")
            cancelled = await api.post(f"/api/storage-servers/{source}/cancel-drain")
        ended = await drain_ends(api, source)
        moved = await tenant_of(api, first)
        left = [await tenant_of(api, tenant_id) for tenant_id in rest]
        events = await server_events(api, source)
        again = await api.post(f"/api/storage-servers/{source}/cancel-drain")

    assert moving["move"]["toServer"] == target
    assert progress(running) == (3, 0, 0, 1)
    assert (twice.status_code, twice.json()["serverState"]) == (409, "DRAINING")
    assert (cordon.status_code, cordon.json()["serverState"]) == (409, "DRAINING")
    assert cancelled.status_code == 202, cancelled.text
    assert ended["state"] == "CORDONED"
    assert progress(ended) == (3, 1, 0, 0)
    assert (moved["status"], moved["storageServer"]) == ("ACTIVE", target)
    assert [(t["status"], t["storageServer"], t["move"]) for t in left] == [
        ("ACTIVE", source, None)
    ] * 2
    assert events[-2:] == ["DRAIN_STARTED", "DRAIN_CANCELLED"]
    assert (again.status_code, again.json()["serverState"]) == (409, "CORDONED")


async def test_a_tenant_moving_already_is_waited_for_and_counts_as_moved(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    source, target = names("oa", "ob")
    settings = fleet(fleet_stage, services, [(source, 1, 10), (target, 2, 10)])
    tenant_ids = sorted(unique_id("dro") for _ in range(2))
    operators = tenant_ids[0]
    async with (
        api_client(settings, keys_dir, temporal=temporal_client) as api,
        storage_side(fleet_stage.extra[1]) as side_b,
    ):
        await provision_onto(api, source, [target], tenant_ids)
        at_target = side_b.admin.locate(operators, StorageMode.SCHEMA)
        # An operator's move, held in PREPARING by its target's lock, when the drain starts.
        async with await psycopg.AsyncConnection.connect(
            side_b.platform_url, autocommit=True
        ) as holder:
            await lock_storage(holder, at_target.schema_name, session=True)
            moved = await api.post(f"/api/tenants/{operators}/move", json={"toServer": target})
            assert moved.status_code == 202, moved.text
            asked = await api.post(f"/api/storage-servers/{source}/drain", json={"concurrency": 2})
            assert asked.status_code == 202, asked.text
            # The other tenant's move ends; the operator's is followed, not counted yet.
            waiting = await eventually(
                lambda: server_of(api, source),
                lambda s: s["drain"]["moved"] == 1 and s["drain"]["running"] == 1,
                timeout=90,
            )
        drained = await drain_ends(api, source)
        tenants = [await tenant_of(api, tenant_id) for tenant_id in tenant_ids]
        trail = (await api.get(f"/api/tenants/{operators}/events")).json()["items"]

    assert progress(waiting) == (2, 1, 0, 1)
    assert drained["state"] == "DRAINED"
    assert progress(drained) == (2, 2, 0, 0)
    assert [(t["status"], t["storageServer"]) for t in tenants] == [("ACTIVE", target)] * 2
    # One move of the operator's tenant: the drain began none of its own.
    assert [e["action"] for e in trail].count("MOVE_REQUESTED") == 1


async def test_a_tenant_with_nowhere_to_go_leaves_the_server_draining_until_a_new_drain(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    source, target = names("na", "nb")
    # Room for one on the target: the second tenant has nowhere to go.
    settings = fleet(fleet_stage, services, [(source, 1, 10), (target, 2, 1)])
    tenant_ids = sorted(unique_id("drf") for _ in range(2))
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        await provision_onto(api, source, [target], tenant_ids)
        first = await api.post(f"/api/storage-servers/{source}/drain")
        assert first.status_code == 202, first.text
        stopped = await drain_ends(api, source)
        restarted = await api.post(f"/api/storage-servers/{source}/drain")
        assert restarted.status_code == 202, restarted.text
        stopped_again = await drain_ends(api, source)
        tenants = [await tenant_of(api, tenant_id) for tenant_id in tenant_ids]
        events = await server_events(api, source)

    assert stopped["state"] == "DRAINING"
    assert progress(stopped) == (2, 1, 1, 0)
    (failure,) = stopped["drain"]["failures"]
    assert failure["tenantId"] in tenant_ids
    assert "no storage server with room" in failure["reason"]
    # Started again on the tenant left: it has nowhere to go still.
    assert restarted.json()["drain"]["endedAt"] is None
    assert stopped_again["state"] == "DRAINING"
    assert progress(stopped_again) == (1, 0, 1, 0)
    assert sorted(t["storageServer"] for t in tenants) == sorted([source, target])
    assert [t["status"] for t in tenants] == ["ACTIVE", "ACTIVE"]
    assert events[-4:] == ["DRAIN_STARTED", "DRAIN_STOPPED", "DRAIN_STARTED", "DRAIN_STOPPED"]

    # With room on the target (a second entry list over the same metadata), a third drain
    # empties the server; a cancel of a drain whose run has ended cordons it at once first.
    roomy = settings.model_copy(
        update={
            "storage_servers": tuple(
                s.model_copy(update={"max_tenants": 10}) for s in settings.storage_fleet()
            )
        }
    )
    async with api_client(roomy, keys_dir, temporal=temporal_client) as api:
        cancelled = await api.post(f"/api/storage-servers/{source}/cancel-drain")
        third = await api.post(f"/api/storage-servers/{source}/drain")
        assert third.status_code == 202, third.text
        drained = await drain_ends(api, source)

    assert (cancelled.status_code, cancelled.json()["state"]) == (202, "CORDONED")
    assert drained["state"] == "DRAINED"
    assert progress(drained) == (1, 1, 0, 0)


async def test_placement_and_moves_never_pick_a_draining_or_drained_server(
    fleet_stage: FleetStage,
) -> None:
    busy, draining = names("pa", "pb")
    settings = fleet_stage.settings(
        (),
        [
            fleet_stage.server(busy, 0, "shared", 10),
            fleet_stage.server(draining, 1, "shared", 10),
        ],
        ONE_POOL,
    )
    async with move_stage(settings) as stage:
        drains = DrainRepository(stage.pool)
        # Both empty: placement would take the one with the lower name.
        await stage.active(unique_id("plc"))
        await drains.start(draining, "operator", "retired", 4)
        placed = [await stage.active(unique_id("plc")) for _ in range(2)]
        mover = unique_id("plc")
        await stage.active(mover)
        with pytest.raises(MoveTargetRefused, match="DRAINING"):
            await stage.moves.begin(
                mover, "op", None, draining, settings.storage_fleet(), settings.placement_map()
            )
        with pytest.raises(MoveTargetRefused, match="no storage server with room"):
            await stage.moves.begin(
                mover, "op", None, None, settings.storage_fleet(), settings.placement_map()
            )
        # Empty: the drain's end leaves it DRAINED, and it takes no tenant either.
        assert await drains.finish(draining, "op", cancelled=False) is ServerState.DRAINED
        placed.append(await stage.active(unique_id("plc"), SlaTier.PREMIUM))
        with pytest.raises(MoveTargetRefused, match="DRAINED"):
            await stage.moves.begin(
                mover, "op", None, draining, settings.storage_fleet(), settings.placement_map()
            )

    assert placed == [busy] * 3


async def test_a_move_on_its_way_onto_the_server_keeps_it_from_being_drained(
    fleet_stage: FleetStage,
) -> None:
    # A move begun before the drain (its target checked then) switches the tenant onto the
    # server later: the drain's end must not call the server DRAINED while it comes.
    source, target = names("ia", "ib")
    settings = fleet_stage.settings(
        (),
        [
            fleet_stage.server(source, 0, "shared", 10),
            fleet_stage.server(target, 1, "shared", 10),
        ],
        ONE_POOL,
    )
    async with move_stage(settings) as stage:
        drains = DrainRepository(stage.pool)
        mover = unique_id("inc")
        assert await stage.active(mover) == source
        await stage.moves.begin(
            mover, "op", None, target, settings.storage_fleet(), settings.placement_map()
        )
        await drains.start(target, "operator", "retired", 4)
        ended = await drains.finish(target, "op", cancelled=False)

    assert ended is ServerState.DRAINING


async def test_a_drained_server_out_of_the_settings_holds_back_no_other_source_drop(
    fleet_stage: FleetStage,
) -> None:
    # A DRAINED server may leave the settings while the sources its moves kept are on it: the
    # worker's drop round must still drop the other servers' due sources.
    gone, kept, target = names("ra", "rb", "rc")
    entries = [
        fleet_stage.server(gone, 0, "shared", 10),
        fleet_stage.server(kept, 1, "shared", 10),
        fleet_stage.server(target, 2, "shared", 10),
    ]
    settings = fleet_stage.settings((), entries, ONE_POOL)
    left = fleet_stage.settings((), entries[1:], ONE_POOL)
    due = datetime.now(UTC) - timedelta(minutes=1)
    async with move_stage(settings) as stage:
        moved: dict[str, str] = {}
        placed = {
            await stage.active(tenant_id): tenant_id
            for tenant_id in (unique_id("ret"), unique_id("ret"))
        }
        assert sorted(placed) == [gone, kept]
        for source, to in ((gone, kept), (kept, target)):
            tenant_id = placed[source]
            await stage.moves.begin(
                tenant_id, "op", None, to, settings.storage_fleet(), settings.placement_map()
            )
            where = storage_location(
                next(s.dsn for s in settings.storage_fleet() if s.name == source),
                StorageMode.SCHEMA,
                tenant_id,
            )
            await stage.moves.switch(
                tenant_id,
                to,
                f"jdbc:postgresql://{to}/{tenant_id}",
                RetainedSource(
                    tenant_id=tenant_id,
                    server=source,
                    mode=StorageMode.SCHEMA,
                    database=where.database,
                    schema_name=where.schema_name,
                    # The gone server's source first, as a drain's would be.
                    drop_after=due - timedelta(seconds=len(moved)),
                ),
            )
            moved[source] = tenant_id
        fleet = StorageFleet.connect(
            left.storage_fleet(),
            left.service_db_roles(),
            stage.servers,
            max_connections=2,
            connect_wait=timedelta(seconds=5),
        )
        async with fleet:
            activities = MoveActivities(
                stage.moves, stage.tenants, RolloutRepository(stage.pool), fleet, left
            )
            await activities.drop_due_sources()
        still_due = await stage.moves.retained_due(datetime.now(UTC))

    assert [s.tenant_id for s in still_due if s.tenant_id in moved.values()] == [moved[gone]]


async def test_migration_0018_rolls_back_with_a_server_draining_and_applies_again(
    fleet_stage: FleetStage,
) -> None:
    draining, drained = names("ma", "mb")
    settings = fleet_stage.settings(
        (),
        [
            fleet_stage.server(draining, 0, "shared", 10),
            fleet_stage.server(drained, 1, "shared", 10),
        ],
        ONE_POOL,
    )
    url = settings.require_database_url()
    async with move_stage(settings) as stage:
        drains = DrainRepository(stage.pool)
        await stage.active(unique_id("mig"))
        await drains.start(draining, "op", None, 4)
        await drains.start(drained, "op", None, 4)
        assert await drains.finish(drained, "op", cancelled=False) is ServerState.DRAINED
        await asyncio.to_thread(roll_back_migration, url, "0018_server_drains")
        rolled_back = await stage.servers.records([draining, drained])
        await asyncio.to_thread(apply_platform_migrations, url)
        applied = await stage.servers.records([draining, drained])
        again = await drains.start(draining, "op", None, 4)

    assert [r.state for r in rolled_back.values()] == [ServerState.CORDONED] * 2
    assert [r.state for r in applied.values()] == [ServerState.CORDONED] * 2
    assert [r.drain for r in applied.values()] == [None, None]
    assert again is False


async def test_requests_while_a_run_whose_drain_ended_is_still_open(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    # The run has written its drain's end (tenants left) and has not closed yet (here: no
    # worker takes it further). A new drain is refused and leaves the drain ended, not under
    # way with no run; a cancel cordons the server, which the run would no longer do.
    (name,) = names("oa")
    settings = fleet(fleet_stage, services, [(name, 1, 10)])
    async with move_stage(settings) as stage:
        await stage.active(unique_id("opn"))
        drains = DrainRepository(stage.pool)
        async with api_client(settings, keys_dir) as api:
            try:
                first = await api.post(f"/api/storage-servers/{name}/drain")
                assert first.status_code == 202, first.text
                assert await drains.finish(name, "op", cancelled=False) is ServerState.DRAINING
                again = await api.post(f"/api/storage-servers/{name}/drain")
                after_again = await server_of(api, name)
                cancel = await api.post(f"/api/storage-servers/{name}/cancel-drain")
                after_cancel = await server_of(api, name)
            finally:
                await temporal_client.get_workflow_handle(drain_workflow_id(name)).terminate(
                    "test over"
                )

    assert again.status_code == 409, again.text
    assert after_again["state"] == "DRAINING"
    assert after_again["drain"]["endedAt"] is not None, after_again["drain"]
    assert cancel.status_code == 202, cancel.text
    assert after_cancel["state"] == "CORDONED"


async def test_drain_requests_are_checked(
    fleet_stage: FleetStage, services: tuple[tuple[str, str], ...], keys_dir: Path
) -> None:
    (name,) = names("ra")
    settings = fleet(fleet_stage, services, [(name, 1, 10)])
    reader = token_of(keys_dir, "reader", "tenants:read")
    async with api_client(settings, keys_dir) as api:
        unknown = await api.post("/api/storage-servers/nowhere/drain")
        too_few = await api.post(f"/api/storage-servers/{name}/drain", json={"concurrency": 0})
        too_many = await api.post(f"/api/storage-servers/{name}/drain", json={"concurrency": 33})
        not_int = await api.post(f"/api/storage-servers/{name}/drain", json={"concurrency": "4"})
        forbidden = await api.post(
            f"/api/storage-servers/{name}/drain", headers={"Authorization": f"Bearer {reader}"}
        )
        not_draining = await api.post(f"/api/storage-servers/{name}/cancel-drain")
        before: dict[str, Any] = await server_of(api, name)
    assert unknown.status_code == 404
    assert (too_few.status_code, too_many.status_code, not_int.status_code) == (422,) * 3
    assert forbidden.status_code == 403
    assert (not_draining.status_code, not_draining.json()["serverState"]) == (409, "ACTIVE")
    assert (before["state"], before["drain"]) == ("ACTIVE", None)


async def test_a_drain_refused_for_a_run_still_open_leaves_the_drain_ended(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    """A drain asked while the last run is still open (its end written on the row, the run not
    closed yet) is 409 and ends the drain it recorded (DRAINED here: the server holds no
    tenant): before, the row was left DRAINING with a run under way and none open, and every
    drain asked after it was 409."""
    (name,) = names("oa")
    settings = fleet(fleet_stage, services, [(name, 1, 10)])
    # No worker: the first drain's run stays open.
    async with api_client(settings, keys_dir) as api:
        first = await api.post(f"/api/storage-servers/{name}/drain")
        assert first.status_code == 202, first.text
        try:
            # The run wrote its end on the row and has not closed yet.
            async with await psycopg.AsyncConnection.connect(
                settings.require_database_url(), autocommit=True
            ) as conn:
                await conn.execute(
                    "UPDATE storage_servers SET drain_ended_at = clock_timestamp() WHERE name = %s",
                    (name,),
                )
            while_open = await api.post(f"/api/storage-servers/{name}/drain")
            after: dict[str, Any] = await server_of(api, name)
        finally:
            await temporal_client.get_workflow_handle(drain_workflow_id(name)).terminate()

    assert while_open.status_code == 409, while_open.text
    assert "still open" in while_open.json()["detail"]
    assert after["state"] == "DRAINED"
    assert after["drain"]["endedAt"] is not None
