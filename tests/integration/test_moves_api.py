"""Tenant moves and updates through the real API over real PostgreSQL servers and a real
Temporal dev server: `POST /api/tenants/{id}/move`, `/cancel-move`, `PATCH /api/tenants/{id}`,
the 409 of DELETE, retry-* and restore while a move is under way, and `MoveRepository`'s switch
and rollback.

No worker runs `MoveTenantWorkflow` here: the tests assert the answers, the row, the audit and
lifecycle events and that a run `tenant-move-{id}` was started (described through the Temporal
client). Each test has its own metadata database (`fleet_stage`): placement counts every tenant
on a server, and a cordon is a server's row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus

from activities.moves import MoveActivities
from api.auth import READ_SCOPE, SERVERS_WRITE_SCOPE, WRITE_SCOPE
from infra.db.fleet import StorageFleet
from infra.db.repository import TransitionRefused
from infra.db.rollouts import RolloutRepository
from infra.db.schema import apply_platform_migrations
from infra.db.tenant_moves import MoveTargetRefused
from tenancy.models import EventAction, MovePhase, RetainedSource, SlaTier, StorageMode
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id, with_database
from tests.support.api_client import api_client, fields_of, token_of
from tests.support.moves import (
    MoveStage,
    end_move_runs,
    make_schema,
    move_fleet_settings,
    move_run,
    move_stage,
    roll_back_migration,
)
from tests.support.storage_fleet import STORAGE_DATABASE, FleetStage
from workflows.move.contracts import WORKFLOW_NAME

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MOVES_MIGRATION = "0017_tenant_moves"
MOVE_FIELDS = {"requestedAt", "requestedBy", "reason", "fromServer", "toServer", "phase"}


@pytest.fixture
def settings(fleet_stage: FleetStage) -> Settings:
    return move_fleet_settings(fleet_stage)


@pytest_asyncio.fixture(loop_scope="session")
async def stage(settings: Settings, temporal_client: Client) -> AsyncIterator[MoveStage]:
    async with move_stage(settings) as made:
        yield made
        every = await made.tenants.all_with_prefix()
        await end_move_runs(temporal_client, [tenant.id for tenant in every])


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


async def actions(stage: MoveStage, tenant_id: str) -> list[tuple[str, str | None]]:
    return [(e.action.value, e.reason) for e in await stage.tenants.events(tenant_id)]


async def test_a_move_is_accepted_202_with_the_move_and_its_run_is_started(
    settings: Settings, stage: MoveStage, keys_dir: Path, temporal_client: Client
) -> None:
    tenant_id = unique_id("mv")
    assert await stage.active(tenant_id) == "pg-a"
    epoch = await stage.epoch(tenant_id)
    async with api_client(settings, keys_dir, subject="olga") as api:
        moved = await api.post(
            f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b", "reason": "noisy"}
        )
        again = await api.get(f"/api/tenants/{tenant_id}")

    assert moved.status_code == 202, moved.text
    tenant = moved.json()
    assert tenant["status"] == "MOVING"
    assert tenant["storageServer"] == "pg-a"
    move = tenant["move"]
    assert set(move) == MOVE_FIELDS
    assert (move["fromServer"], move["toServer"], move["phase"]) == ("pg-a", "pg-b", "PREPARING")
    assert (move["requestedBy"], move["reason"]) == ("olga", "noisy")
    assert datetime.fromisoformat(move["requestedAt"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert again.json()["move"] == move
    # ACTIVE -> MOVING is a status change: the epoch grows with it.
    assert await stage.epoch(tenant_id) == epoch + 1
    trail = await actions(stage, tenant_id)
    assert trail[-2:] == [
        ("MOVE_REQUESTED", "pg-a -> pg-b: noisy"),
        ("STATUS_CHANGED", "noisy"),
    ]
    names = [name for name, _ in await stage.outbox(tenant_id)]
    assert names[-2:] == ["move-requested", "status-changed"]
    _, requested = (await stage.outbox(tenant_id))[-2]
    assert requested["type"] == "io.platform-service.tenant.move-requested.v1"
    assert requested["data"]["location"]["status"] == "MOVING"

    run = await move_run(temporal_client, tenant_id)
    assert run is not None
    assert run.workflow_type == WORKFLOW_NAME
    assert run.task_queue == settings.task_queue
    assert run.status is WorkflowExecutionStatus.RUNNING


async def test_a_move_of_no_tenant_is_404_and_of_a_tenant_not_active_409(
    settings: Settings, stage: MoveStage, keys_dir: Path, temporal_client: Client
) -> None:
    failed, moving = unique_id("mv"), unique_id("mv")
    await stage.active(failed, status=TenantStatus.MIGRATION_ERROR)
    await stage.active(moving)
    async with api_client(settings, keys_dir) as api:
        missing = await api.post("/api/tenants/nobody_here/move", json={})
        not_active = await api.post(f"/api/tenants/{failed}/move", json={"toServer": "pg-b"})
        first = await api.post(f"/api/tenants/{moving}/move")
        second = await api.post(f"/api/tenants/{moving}/move", json={"toServer": "pg-c"})

    assert problem(missing, 404)["type"] == "urn:platform-service:problem:tenant-not-found"
    conflict = problem(not_active, 409)
    assert conflict["tenantStatus"] == "MIGRATION_ERROR"
    assert "a move needs ACTIVE" in conflict["detail"]
    assert first.status_code == 202, first.text
    assert "a move is under way" in problem(second, 409)["detail"]
    unchanged = await stage.tenants.get(failed)
    assert unchanged is not None
    assert unchanged.status is TenantStatus.MIGRATION_ERROR
    assert await move_run(temporal_client, failed) is None


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("pg-nowhere", "unknown storage server pg-nowhere"),
        ("pg-a", "already on storage server pg-a"),
        ("pg-b", "storage server pg-b is CORDONED"),
        ("pg-full", "storage server pg-full has no room (0 of 0)"),
        ("pg-db", "storage server pg-db does not take SCHEMA tenants"),
        ("pg-twin", "storage server pg-twin is on the same PostgreSQL server as pg-a"),
    ],
    ids=["unknown", "current", "cordoned", "no-room", "storage-mode", "same-postgresql"],
)
async def test_a_target_that_may_not_take_the_tenant_is_422_naming_why(
    settings: Settings,
    stage: MoveStage,
    keys_dir: Path,
    temporal_client: Client,
    target: str,
    says: str,
) -> None:
    tenant_id = unique_id("mv")
    assert await stage.active(tenant_id) == "pg-a"
    await stage.cordon("pg-b")
    epoch = await stage.epoch(tenant_id)
    async with api_client(settings, keys_dir) as api:
        refused = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": target})
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()

    body = problem(refused, 422)
    assert says in body["detail"]
    assert fields_of(refused) == {"toServer"}
    assert (after["status"], after["move"], after["storageServer"]) == ("ACTIVE", None, "pg-a")
    assert await stage.epoch(tenant_id) == epoch
    assert "MOVE_REQUESTED" not in [a for a, _ in await actions(stage, tenant_id)]
    assert await move_run(temporal_client, tenant_id) is None


async def test_without_to_server_placement_chooses_in_the_pool_never_the_current_server(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    # pg-a holds one tenant, pg-b two: placement would choose pg-a, the tenant's own.
    tenant_id = unique_id("mv")
    assert await stage.active(tenant_id) == "pg-a"
    for _ in range(2):
        await stage.active(unique_id("mv"))
    async with stage.pool.connection() as conn:
        await conn.execute(
            "UPDATE tenants SET storage_server = 'pg-b' WHERE id <> %s", (tenant_id,)
        )
    lonely = unique_id("mv")
    async with api_client(settings, keys_dir) as api:
        moved = await api.post(f"/api/tenants/{tenant_id}/move", json={"reason": "rebalance"})
        # Alone in its pool: nowhere to go but its own server.
        await stage.active(lonely, tier=SlaTier.PREMIUM)
        none_left = await api.post(f"/api/tenants/{lonely}/move")

    assert moved.status_code == 202, moved.text
    assert moved.json()["move"]["toServer"] == "pg-b"
    body = problem(none_left, 422)
    assert 'no storage server with room in pool "dedicated"' in body["detail"]
    assert "(other than pg-c)" in body["detail"]


async def test_cancel_move_is_409_unless_moving_and_once_switched(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    # A cancel the run takes is tests/integration/test_moves.py's (a worker runs the move).
    idle, moving = unique_id("mv"), unique_id("mv")
    await stage.active(idle)
    await stage.active(moving)
    async with api_client(settings, keys_dir) as api:
        not_moving = await api.post(f"/api/tenants/{idle}/cancel-move")
        missing = await api.post("/api/tenants/nobody_here/cancel-move")
        assert (await api.post(f"/api/tenants/{moving}/move")).status_code == 202
        await stage.moves.set_phase(moving, MovePhase.SWITCHED)
        switched = await api.post(f"/api/tenants/{moving}/cancel-move")

    assert "cancel-move needs MOVING" in problem(not_moving, 409)["detail"]
    problem(missing, 404)
    assert problem(switched, 409)["phase"] == "SWITCHED"


async def test_a_moving_tenant_s_delete_retries_and_restore_are_409_a_move_is_under_way(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    tenant_id = unique_id("mv")
    await stage.active(tenant_id)
    async with api_client(settings, keys_dir) as api:
        assert (await api.post(f"/api/tenants/{tenant_id}/move")).status_code == 202
        refused = {
            "delete": await api.delete(f"/api/tenants/{tenant_id}"),
            "retry-provisioning": await api.post(f"/api/tenants/{tenant_id}/retry-provisioning"),
            "retry-migration": await api.post(f"/api/tenants/{tenant_id}/retry-migration"),
            "retry-deletion": await api.post(f"/api/tenants/{tenant_id}/retry-deletion"),
            "restore": await api.post(f"/api/tenants/{tenant_id}/restore"),
        }
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()

    for operation, answer in refused.items():
        body = problem(answer, 409)
        assert "a move is under way" in body["detail"], operation
        assert body["tenantStatus"] == "MOVING", operation
    assert after["status"] == "MOVING"
    assert after["deletion"] is None


async def test_patch_renames_at_once_with_a_tenant_updated_event(
    settings: Settings, stage: MoveStage, keys_dir: Path, temporal_client: Client
) -> None:
    tenant_id = unique_id("up")
    await stage.active(tenant_id)
    epoch = await stage.epoch(tenant_id)
    async with api_client(settings, keys_dir, subject="uma") as api:
        renamed = await api.patch(f"/api/tenants/{tenant_id}", json={"name": "  Acme Corp "})
        same = await api.patch(f"/api/tenants/{tenant_id}", json={"name": "Acme Corp"})
        # A tier of the same pool (shared): no move.
        retiered = await api.patch(f"/api/tenants/{tenant_id}", json={"slaTier": "STANDARD"})
        missing = await api.patch("/api/tenants/nobody_here", json={"name": "x"})

    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["status"]) == ("Acme Corp", "ACTIVE")
    assert same.status_code == 200
    assert retiered.status_code == 200, retiered.text
    assert (retiered.json()["slaTier"], retiered.json()["status"]) == ("STANDARD", "ACTIVE")
    problem(missing, 404)
    updates = [(a, r) for a, r in await actions(stage, tenant_id) if a == "TENANT_UPDATED"]
    assert updates == [
        ("TENANT_UPDATED", f"name: '{tenant_id}' -> 'Acme Corp'"),
        ("TENANT_UPDATED", "slaTier: BASIC -> STANDARD"),
    ]
    events = [event for name, event in await stage.outbox(tenant_id) if name == "updated"]
    assert [e["type"] for e in events] == ["io.platform-service.tenant.updated.v1"] * 2
    assert events[-1]["data"]["slaTier"] == "STANDARD"
    assert await stage.epoch(tenant_id) == epoch
    assert await move_run(temporal_client, tenant_id) is None


async def test_patch_to_a_tier_of_another_pool_moves_the_tenant_202(
    settings: Settings, stage: MoveStage, keys_dir: Path, temporal_client: Client
) -> None:
    tenant_id = unique_id("up")
    await stage.active(tenant_id)
    async with api_client(settings, keys_dir, subject="uma") as api:
        upgraded = await api.patch(f"/api/tenants/{tenant_id}", json={"slaTier": "PREMIUM"})
        during = await api.patch(f"/api/tenants/{tenant_id}", json={"slaTier": "BASIC"})

    assert upgraded.status_code == 202, upgraded.text
    tenant = upgraded.json()
    assert (tenant["status"], tenant["slaTier"]) == ("MOVING", "PREMIUM")
    assert tenant["move"]["toServer"] == "pg-c"
    assert (tenant["move"]["fromServer"], tenant["move"]["requestedBy"]) == ("pg-a", "uma")
    assert "a move is under way" in problem(during, 409)["detail"]
    trail = await actions(stage, tenant_id)
    assert trail[-3:] == [
        ("TENANT_UPDATED", "slaTier: BASIC -> PREMIUM"),
        ("MOVE_REQUESTED", "pg-a -> pg-c: tier PREMIUM"),
        ("STATUS_CHANGED", "tier PREMIUM"),
    ]
    run = await move_run(temporal_client, tenant_id)
    assert run is not None
    assert run.workflow_type == WORKFLOW_NAME


async def test_patch_refuses_storage_mode_by_name_and_unknown_fields(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    tenant_id = unique_id("up")
    await stage.active(tenant_id)
    url = f"/api/tenants/{tenant_id}"
    async with api_client(settings, keys_dir) as api:
        mode = await api.patch(url, json={"storageMode": "DATABASE", "name": "New"})
        unknown = await api.patch(url, json={"colour": "blue"})
        bad_tier = await api.patch(url, json={"slaTier": "GOLD"})
        empty_name = await api.patch(url, json={"name": "   "})
        after = (await api.get(url)).json()

    body = problem(mode, 422)
    assert fields_of(mode) == {"storageMode"}
    assert "storageMode cannot change" in body["errors"][0]["message"]
    assert fields_of(unknown) == {"colour"}
    assert fields_of(bad_tier) == {"slaTier"}
    assert fields_of(empty_name) == {"name"}
    assert (after["name"], after["storageMode"]) == (tenant_id, "SCHEMA")


async def test_the_routes_need_their_scopes_and_are_documented(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    tenant_id = unique_id("mv")
    await stage.active(tenant_id)
    writer = {"Authorization": f"Bearer {token_of(keys_dir, 'w', READ_SCOPE, WRITE_SCOPE)}"}
    servers = {"Authorization": f"Bearer {token_of(keys_dir, 's', SERVERS_WRITE_SCOPE)}"}
    async with api_client(settings, keys_dir) as api:
        move_as_writer = await api.post(f"/api/tenants/{tenant_id}/move", headers=writer)
        patch_as_servers = await api.patch(
            f"/api/tenants/{tenant_id}", json={"name": "x"}, headers=servers
        )
        schema = (await api.get("/openapi.json")).json()

    assert problem(move_as_writer, 403)["requiredScope"] == SERVERS_WRITE_SCOPE
    assert problem(patch_as_servers, 403)["requiredScope"] == WRITE_SCOPE
    paths = schema["paths"]
    for path, method, codes in (
        ("/api/tenants/{tenant_id}/move", "post", {"202", "401", "403", "404", "409", "422"}),
        ("/api/tenants/{tenant_id}/cancel-move", "post", {"202", "404", "409", "503"}),
        ("/api/tenants/{tenant_id}", "patch", {"200", "202", "404", "409", "422", "415"}),
    ):
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
    patch_body = schema["components"]["schemas"]["TenantUpdate"]
    assert set(patch_body["properties"]) == {"name", "slaTier"}
    assert "Move" in schema["components"]["schemas"]
    assert "move" in schema["components"]["schemas"]["Tenant"]["properties"]


async def test_a_start_refused_for_a_run_still_open_rolls_the_move_back(
    settings: Settings, stage: MoveStage, keys_dir: Path
) -> None:
    tenant_id = unique_id("mv")
    await stage.active(tenant_id)
    async with api_client(settings, keys_dir) as api:
        assert (await api.post(f"/api/tenants/{tenant_id}/move")).status_code == 202
        # The row is rolled back while its run is still open (no worker ends it).
        await stage.moves.roll_back(tenant_id, "test", cancelled=True)
        again = await api.post(f"/api/tenants/{tenant_id}/move")
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()

    assert "still open" in problem(again, 409)["detail"]
    assert (after["status"], after["move"]) == ("ACTIVE", None)
    assert [a for a, _ in await actions(stage, tenant_id)][-2:] == [
        "MOVE_CANCELLED",
        "STATUS_CHANGED",
    ]


def retained_source(tenant_id: str, server: str = "pg-a") -> RetainedSource:
    return RetainedSource(
        tenant_id=tenant_id,
        server=server,
        mode=StorageMode.SCHEMA,
        database="tenants",
        schema_name=f"tenant_{tenant_id}",
        drop_after=datetime.now(UTC) + timedelta(hours=1),
    )


async def test_switch_moves_the_row_in_one_transaction_and_a_repeat_is_a_no_op(
    settings: Settings, stage: MoveStage
) -> None:
    tenant_id, broken = unique_id("sw"), unique_id("sw")
    fleet, placement = settings.storage_fleet(), settings.placement_map()
    for tenant in (tenant_id, broken):
        await stage.active(tenant)
        await stage.moves.begin(tenant, "olga", None, "pg-b", fleet, placement)
    epoch = await stage.epoch(tenant_id)
    outbox = len(await stage.outbox(tenant_id))
    url = "jdbc:postgresql://127.0.0.1:1/tenants?currentSchema=tenant_x"

    # A write that fails at its last statement leaves nothing of the switch behind.
    no_schema = retained_source(broken).model_copy(update={"schema_name": None})
    with pytest.raises(psycopg.errors.NotNullViolation):
        await stage.moves.switch(broken, "pg-b", url, no_schema)
    kept = await stage.tenants.get(broken)
    assert kept is not None
    assert (kept.status, kept.storage_server, kept.move is not None) == (
        TenantStatus.MOVING,
        "pg-a",
        True,
    )
    assert await stage.retained(broken) == []

    with pytest.raises(TransitionRefused):
        await stage.moves.switch(tenant_id, "pg-c", url, retained_source(tenant_id))
    await stage.moves.switch(tenant_id, "pg-b", url, retained_source(tenant_id))
    switched = await stage.tenants.get(tenant_id)
    assert switched is not None
    assert (switched.status, switched.storage_server, switched.jdbc_url, switched.move) == (
        TenantStatus.ACTIVE,
        "pg-b",
        url,
        None,
    )
    assert await stage.epoch(tenant_id) == epoch + 1
    written = (await stage.outbox(tenant_id))[outbox:]
    assert [name for name, _ in written] == ["moved", "status-changed"]
    moved = written[0][1]
    assert moved["type"] == "io.platform-service.tenant.moved.v1"
    assert moved["data"]["reason"] == "pg-a -> pg-b"
    assert moved["data"]["epoch"] == epoch + 1
    assert moved["data"]["location"] == {
        "tenantId": tenant_id,
        "status": "ACTIVE",
        "storageMode": "SCHEMA",
        "storageServer": "pg-b",
        "jdbcUrl": url,
        "epoch": epoch + 1,
    }
    assert written[1][1]["data"]["oldStatus"] == "MOVING"
    retained = await stage.retained(tenant_id)
    assert [(r["server"], r["schema_name"], r["dropped_at"]) for r in retained] == [
        ("pg-a", f"tenant_{tenant_id}", None)
    ]

    await stage.moves.switch(tenant_id, "pg-b", url, retained_source(tenant_id))
    assert await stage.epoch(tenant_id) == epoch + 1
    assert len(await stage.outbox(tenant_id)) == outbox + 2
    assert len(await stage.retained(tenant_id)) == 1


async def test_roll_back_leaves_the_tenant_active_on_its_source_with_move_failed(
    settings: Settings, stage: MoveStage
) -> None:
    tenant_id = unique_id("rb")
    await stage.active(tenant_id)
    before = await stage.tenants.get(tenant_id)
    assert before is not None
    await stage.moves.begin(
        tenant_id, "olga", "noisy", None, settings.storage_fleet(), settings.placement_map()
    )
    assert await stage.moves.set_phase(tenant_id, MovePhase.COPYING)
    assert await stage.moves.set_status_reason(tenant_id, "pg-a unreachable; retrying")
    waiting = await stage.tenants.get(tenant_id)
    assert waiting is not None
    assert waiting.move is not None
    assert (waiting.move.phase, waiting.status_reason) == (
        MovePhase.COPYING,
        "pg-a unreachable; retrying",
    )

    await stage.moves.roll_back(tenant_id, "verify: 2 tables differ", cancelled=False)
    await stage.moves.roll_back(tenant_id, "verify: 2 tables differ", cancelled=False)

    after = await stage.tenants.get(tenant_id)
    assert after is not None
    assert (after.status, after.storage_server, after.jdbc_url, after.move) == (
        TenantStatus.ACTIVE,
        "pg-a",
        before.jdbc_url,
        None,
    )
    assert after.status_reason == "verify: 2 tables differ"
    trail = await actions(stage, tenant_id)
    assert trail[-2:] == [
        ("MOVE_FAILED", "verify: 2 tables differ"),
        ("STATUS_CHANGED", "verify: 2 tables differ"),
    ]
    assert [a for a, _ in trail].count(EventAction.MOVE_FAILED.value) == 1
    names = [name for name, _ in await stage.outbox(tenant_id)]
    assert names[-2:] == ["move-failed", "status-changed"]
    assert not await stage.moves.set_phase(tenant_id, MovePhase.FROZEN)
    with pytest.raises(TransitionRefused):
        await stage.moves.switch(tenant_id, "pg-b", "jdbc:x", retained_source(tenant_id))


async def test_retained_sources_come_due_and_are_marked_dropped(
    settings: Settings, stage: MoveStage
) -> None:
    tenant_id = unique_id("rt")
    await stage.active(tenant_id)
    await stage.moves.begin(
        tenant_id, "olga", None, "pg-b", settings.storage_fleet(), settings.placement_map()
    )
    await stage.moves.switch(tenant_id, "pg-b", "jdbc:x", retained_source(tenant_id))

    def ours(due: list[RetainedSource]) -> list[RetainedSource]:
        return [r for r in due if r.tenant_id == tenant_id]

    assert ours(await stage.moves.retained_due(datetime.now(UTC))) == []
    due = ours(await stage.moves.retained_due(datetime.now(UTC) + timedelta(hours=2)))
    assert [(r.server, r.mode, r.schema_name) for r in due] == [
        ("pg-a", StorageMode.SCHEMA, f"tenant_{tenant_id}")
    ]
    assert due[0].id is not None
    await stage.moves.mark_dropped(due[0].id)
    await stage.moves.mark_dropped(due[0].id)
    assert ours(await stage.moves.retained_due(datetime.now(UTC) + timedelta(hours=2))) == []
    assert (await stage.retained(tenant_id))[0]["dropped_at"] is not None


async def test_the_moves_migration_rolls_back_a_moving_tenant_and_applies_again(
    settings: Settings, stage: MoveStage
) -> None:
    tenant_id = unique_id("mg")
    await stage.active(tenant_id)
    await stage.moves.begin(
        tenant_id, "olga", None, "pg-b", settings.storage_fleet(), settings.placement_map()
    )
    url = settings.require_database_url()

    roll_back_migration(url, MOVES_MIGRATION)
    with psycopg.connect(url) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'tenants'"
            )
        }
        status = conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        tables = conn.execute("SELECT to_regclass('retained_storage')").fetchone()
    assert not {c for c in columns if c.startswith("move_")}
    # Abandoned where its row stands: on its source, as before the move.
    assert status == ("ACTIVE",)
    assert tables == (None,)
    assert apply_platform_migrations(url) == [MOVES_MIGRATION]


async def test_a_move_holds_its_place_on_the_target_so_concurrent_moves_never_overfill_it(
    fleet_stage: FleetStage,
) -> None:
    small = fleet_stage.settings(
        (),
        servers=[
            fleet_stage.server("pg-a", 0, "shared", 10),
            fleet_stage.server("pg-one", 1, "spare", 1),
        ],
        placement={"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"},
    )
    ids = [unique_id("hd") for _ in range(3)]
    async with move_stage(small) as stage:
        for tenant_id in ids:
            await stage.active(tenant_id)
        fleet, placement = small.storage_fleet(), small.placement_map()

        async def begin(tenant_id: str) -> str:
            try:
                await stage.moves.begin(tenant_id, "olga", None, "pg-one", fleet, placement)
            except MoveTargetRefused as refused:
                return str(refused)
            return "begun"

        answers = await asyncio.gather(*(begin(tenant_id) for tenant_id in ids[:2]))
        # Still on pg-a until its switch, yet pg-one's one place is taken.
        late = await begin(ids[2])
        statuses = [(await stage.tenants.get(t)).status for t in ids]  # type: ignore[union-attr]

    assert sorted(answers) == ["begun", "storage server pg-one has no room (1 of 1)"]
    assert late == "storage server pg-one has no room (1 of 1)"
    assert sorted(statuses) == [TenantStatus.ACTIVE, TenantStatus.ACTIVE, TenantStatus.MOVING]


async def test_reconciliation_reports_a_moving_tenant_without_its_move_run(
    settings: Settings, stage: MoveStage, keys_dir: Path, temporal_client: Client
) -> None:
    running, lost = unique_id("rc"), unique_id("rc")
    async with api_client(settings, keys_dir) as api:
        for tenant_id in (running, lost):
            await stage.active(tenant_id)
            assert (await api.post(f"/api/tenants/{tenant_id}/move")).status_code == 202
        await end_move_runs(temporal_client, [lost])
        report = await api.get("/api/admin/reconciliation")

    assert report.status_code == 200, report.text
    stuck = {
        d["tenantId"]: d["detail"]
        for d in report.json()["drift"]
        if d["kind"] == "STUCK_WITHOUT_WORKFLOW"
    }
    assert set(stuck) == {lost}
    assert "tenant is MOVING" in stuck[lost]


async def test_reconciliation_calls_neither_a_move_s_target_nor_a_retained_source_an_orphan(
    settings: Settings,
    stage: MoveStage,
    keys_dir: Path,
    fleet_stage: FleetStage,
) -> None:
    moving, moved = unique_id("rc"), unique_id("rc")
    pg_a = with_database(fleet_stage.main, fleet_stage.storage_database)
    pg_b = with_database(fleet_stage.extra[0], STORAGE_DATABASE)
    fleet, placement = settings.storage_fleet(), settings.placement_map()
    for tenant_id in (moving, moved):
        await stage.active(tenant_id)
        await stage.moves.begin(tenant_id, "olga", None, "pg-b", fleet, placement)
        # The source, and the target made by the move's PREPARING.
        make_schema(pg_a, tenant_id)
        make_schema(pg_b, tenant_id)
    await stage.moves.switch(moved, "pg-b", "jdbc:x", retained_source(moved))
    stray = unique_id("rc")
    make_schema(pg_b, stray)
    try:
        async with api_client(settings, keys_dir) as api:
            report = await api.get("/api/admin/reconciliation")
    finally:
        for tenant_id in (moving, moved, stray):
            make_schema(pg_a, tenant_id, drop=True)
            make_schema(pg_b, tenant_id, drop=True)

    assert report.status_code == 200, report.text
    orphans = {
        (d["tenantId"], d["server"])
        for d in report.json()["drift"]
        if d["kind"] == "ORPHAN_STORAGE"
        and d["tenantId"] in (moving, moved, stray)
        # pg-c and pg-full share pg-b's database, pg-db pg-a's: they see the same schemas.
        and d["server"] in ("pg-a", "pg-b")
    }
    # Only the storage no row accounts for.
    assert orphans == {(stray, "pg-b")}


async def test_a_start_temporal_refuses_rolls_the_move_back_and_answers_503(
    settings: Settings, stage: MoveStage, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = unique_id("mv")
    await stage.active(tenant_id)
    # Temporal answers NOT_FOUND for a namespace it does not have: the run surely did not start.
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "no-such-namespace")
    async with api_client(settings, keys_dir) as api:
        refused = await api.post(f"/api/tenants/{tenant_id}/move", json={"toServer": "pg-b"})
        after = (await api.get(f"/api/tenants/{tenant_id}")).json()

    assert "did not start" in problem(refused, 503)["detail"]
    assert (after["status"], after["move"], after["storageServer"]) == ("ACTIVE", None, "pg-a")
    assert [a for a, _ in await actions(stage, tenant_id)][-2:] == [
        "MOVE_CANCELLED",
        "STATUS_CHANGED",
    ]


async def test_a_source_kept_on_a_server_no_longer_configured_holds_back_no_other_drop(
    settings: Settings, stage: MoveStage
) -> None:
    # A drained server is taken out of PLATFORM_STORAGE_SERVERS while sources moved off it
    # are still kept there: the sweep keeps those and drops the others that are due.
    gone, moved = unique_id("rg"), unique_id("rg")
    assert await stage.active(moved) == "pg-a"
    await stage.active(gone)
    fleet = StorageFleet.connect(
        settings.storage_fleet(),
        settings.service_db_roles(),
        stage.servers,
        max_connections=2,
        connect_wait=timedelta(seconds=5),
    )
    async with fleet:
        source = await fleet.admin("pg-a").ensure(moved, StorageMode.SCHEMA)
        await stage.moves.begin(
            moved, "olga", None, "pg-b", settings.storage_fleet(), settings.placement_map()
        )
        past = datetime.now(UTC) - timedelta(minutes=1)
        await stage.moves.switch(
            moved,
            "pg-b",
            "jdbc:x",
            retained_source(moved).model_copy(
                update={"database": source.database, "drop_after": past}
            ),
        )
        async with stage.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO retained_storage "
                "(tenant_id, server, mode, database, schema_name, drop_after) "
                "VALUES (%s, 'pg-retired', 'SCHEMA', 'tenants', %s, %s)",
                (gone, f"tenant_{gone}", past - timedelta(minutes=1)),
            )
        activities = MoveActivities(
            stage.moves, stage.tenants, RolloutRepository(stage.pool), fleet, settings
        )

        await activities.drop_due_sources()

        assert not await fleet.admin("pg-a").exists(source)
    assert (await stage.retained(moved))[0]["dropped_at"] is not None
    assert (await stage.retained(gone))[0]["dropped_at"] is None


async def test_a_kept_source_is_not_dropped_when_the_tenant_lives_there_under_another_name(
    settings: Settings, stage: MoveStage
) -> None:
    # pg-twin names pg-a's PostgreSQL server: a tenant moved pg-a -> pg-b -> pg-twin lives in
    # the very storage kept on pg-a; its retention ending drops nothing.
    tenant_id = unique_id("tw")
    assert await stage.active(tenant_id) == "pg-a"
    fleet = StorageFleet.connect(
        settings.storage_fleet(),
        settings.service_db_roles(),
        stage.servers,
        max_connections=2,
        connect_wait=timedelta(seconds=5),
    )
    async with fleet:
        source = await fleet.admin("pg-a").ensure(tenant_id, StorageMode.SCHEMA)
        assert fleet.locate("pg-twin", tenant_id, StorageMode.SCHEMA) == source
        fleet_now, placement = settings.storage_fleet(), settings.placement_map()
        past = datetime.now(UTC) - timedelta(minutes=1)
        await stage.moves.begin(tenant_id, "olga", None, "pg-b", fleet_now, placement)
        await stage.moves.switch(
            tenant_id,
            "pg-b",
            "jdbc:x",
            retained_source(tenant_id).model_copy(
                update={"database": source.database, "drop_after": past}
            ),
        )
        await stage.moves.begin(tenant_id, "olga", None, "pg-twin", fleet_now, placement)
        await stage.moves.switch(tenant_id, "pg-twin", "jdbc:y", retained_source(tenant_id, "pg-b"))
        activities = MoveActivities(
            stage.moves, stage.tenants, RolloutRepository(stage.pool), fleet, settings
        )

        await activities.drop_due_sources()

        assert await fleet.admin("pg-twin").exists(source)
    assert (await stage.retained(tenant_id))[0]["dropped_at"] is not None
