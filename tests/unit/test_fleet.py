"""Storage servers in the settings, and the placement rule: pool, state, mode, room, fewest
tenants, ties by name."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tenancy.fleet import (
    ServerLoad,
    ServerState,
    StorageServer,
    candidates,
    choose_server,
    no_room_reason,
    tiers_of,
    unavailable,
)
from tenancy.models import SlaTier, StorageMode
from tenancy.settings import UNBOUNDED_TENANTS, Settings

METADATA = "postgresql://platform@meta.internal:5432/platform"


pytestmark = pytest.mark.usefixtures("clean_env")


def server(name: str, pool: str = "shared", max_tenants: int = 10, **more: object) -> StorageServer:
    return StorageServer.model_validate(
        {
            "name": name,
            "url": f"postgresql://platform@{name}:5432/tenants",
            "pool": pool,
            "maxTenants": max_tenants,
            **more,
        }
    )


def load(tenants: int, state: ServerState = ServerState.ACTIVE) -> ServerLoad:
    return ServerLoad(state, tenants)


def test_the_fewest_tenants_win_and_ties_go_by_name() -> None:
    servers = [server("pg-c"), server("pg-b"), server("pg-a")]

    assert choose_server(servers, {}) == servers[2]
    assert choose_server(servers, {"pg-a": load(3), "pg-b": load(2), "pg-c": load(2)}) == servers[1]
    assert choose_server(servers, {"pg-a": load(1), "pg-b": load(2), "pg-c": load(0)}) == servers[0]


def test_full_and_cordoned_servers_take_no_one() -> None:
    servers = [server("pg-a", max_tenants=2), server("pg-b", max_tenants=5)]

    assert choose_server(servers, {"pg-a": load(2), "pg-b": load(4)}) == servers[1]
    assert (
        choose_server(servers, {"pg-a": load(0), "pg-b": load(0, ServerState.CORDONED)})
        == servers[0]
    )
    assert choose_server(servers, {"pg-a": load(2), "pg-b": load(5)}) is None
    assert choose_server(servers, {"pg-a": load(0, ServerState.CORDONED), "pg-b": load(5)}) is None
    # A server of capacity 0 takes no tenant (an operator's way to keep one for moves only).
    assert choose_server([server("pg-z", max_tenants=0)], {}) is None


@pytest.mark.parametrize("state", [ServerState.DRAINING, ServerState.DRAINED])
def test_draining_and_drained_servers_take_no_one_even_when_emptier(state: ServerState) -> None:
    servers = [server("pg-a"), server("pg-b")]

    assert choose_server(servers, {"pg-a": load(9), "pg-b": load(0, state)}) == servers[0]
    assert choose_server(servers, {"pg-a": load(10), "pg-b": load(0, state)}) is None
    assert unavailable(servers[1], load(0, state)) == f"storage server pg-b is {state.value}"


def test_candidates_are_the_pool_servers_that_take_the_mode() -> None:
    shared, dedicated = server("pg-s"), server("pg-d", "dedicated", storageModes=["DATABASE"])
    servers = [shared, dedicated]

    assert candidates(servers, "shared", StorageMode.SCHEMA) == [shared]
    assert candidates(servers, "dedicated", StorageMode.DATABASE) == [dedicated]
    assert candidates(servers, "dedicated", StorageMode.SCHEMA) == []
    assert dedicated.storage_modes == (StorageMode.DATABASE,)
    assert shared.storage_modes == (StorageMode.SCHEMA, StorageMode.DATABASE)


def test_the_reason_of_no_room_is_the_contract_s() -> None:
    assert (
        no_room_reason("dedicated", SlaTier.PREMIUM, StorageMode.SCHEMA)
        == 'no storage server with room in pool "dedicated" for PREMIUM SCHEMA tenants'
    )


def test_without_servers_there_is_one_default_server_taking_every_tier() -> None:
    settings = Settings(database_url=METADATA)

    (only,) = settings.storage_fleet()
    assert (only.name, only.pool, only.max_tenants) == ("default", "default", UNBOUNDED_TENANTS)
    assert only.dsn == METADATA
    assert settings.placement_map() == dict.fromkeys(SlaTier, "default")
    storage = "postgresql://platform@storage.internal:5432/tenants"
    assert (
        Settings(database_url=METADATA, storage_database_url=storage).storage_fleet()[0].dsn
        == storage
    )


def test_servers_and_placement_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PLATFORM_STORAGE_SERVERS",
        json.dumps(
            [
                {
                    "name": "pg-shared-1",
                    "url": "postgresql://platform@10.0.0.5:5432/tenants",
                    "pool": "shared",
                    "maxTenants": 5000,
                },
                {
                    "name": "pg-dedicated-1",
                    "url": "postgresql://platform@10.0.0.6:5432/tenants",
                    "pool": "dedicated",
                    "maxTenants": 50,
                    "storageModes": ["DATABASE"],
                },
            ]
        ),
    )
    monkeypatch.setenv("PLATFORM_PLACEMENT", '{"BASIC": "shared", "PREMIUM": "dedicated"}')

    settings = Settings(database_url=METADATA)

    assert [s.name for s in settings.storage_fleet()] == ["pg-shared-1", "pg-dedicated-1"]
    # A tier the placement does not name goes to the first server's pool.
    assert settings.placement_map() == {
        SlaTier.BASIC: "shared",
        SlaTier.STANDARD: "shared",
        SlaTier.PREMIUM: "dedicated",
    }
    assert tiers_of(settings.placement_map(), "shared") == [SlaTier.BASIC, SlaTier.STANDARD]


@pytest.mark.parametrize(
    ("servers", "placement", "field", "says"),
    [
        (
            [{"name": "pg-a", "url": "postgresql://p@a:5432/t", "maxTenants": 1}],
            {"PREMIUM": "dedicated"},
            "",
            "pool 'dedicated'",
        ),
        (
            [
                {"name": "pg-a", "url": "postgresql://p@a:5432/t", "maxTenants": 1},
                {"name": "pg-a", "url": "postgresql://p@b:5432/t", "maxTenants": 1},
            ],
            {},
            "",
            "names pg-a more than once",
        ),
        (
            [{"name": "a", "url": "postgresql://p@a:5432/t", "maxTenants": 1}],
            {},
            "storage_servers",
            "pattern",
        ),
        ([{"name": "pg-a", "url": "postgresql://p@a:5432/t"}], {}, "storage_servers", "required"),
        (
            [
                {
                    "name": "pg-a",
                    "url": "postgresql://p@a:5432/t",
                    "maxTenants": 1,
                    "storageModes": [],
                }
            ],
            {},
            "storage_servers",
            "at least 1",
        ),
        (
            [{"name": "pg-a", "url": "postgresql://p@a:5432/t", "maxTenants": 1, "weight": 3}],
            {},
            "storage_servers",
            "Extra inputs",
        ),
        (
            [{"name": "pg-a", "url": "postgresql://p@a:5432/t", "maxTenants": 1}],
            {"GOLD": "default"},
            "placement",
            "BASIC",
        ),
    ],
)
def test_a_fleet_that_cannot_work_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    servers: list[dict[str, object]],
    placement: dict[str, str],
    field: str,
    says: str,
) -> None:
    monkeypatch.setenv("PLATFORM_STORAGE_SERVERS", json.dumps(servers))
    monkeypatch.setenv("PLATFORM_PLACEMENT", json.dumps(placement))

    with pytest.raises(ValidationError) as caught:
        Settings(database_url=METADATA)

    (error,) = caught.value.errors()
    # A model-level error (the servers and placement together) has an empty loc and names
    # the variable in its message.
    loc = str(error["loc"][0]) if error["loc"] else ""
    assert loc == field
    assert says in str(caught.value)
    assert field or "PLATFORM_" in str(caught.value)
