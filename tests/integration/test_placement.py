"""Tenants placed on a fleet of real PostgreSQL servers: by tier and storage mode, on the
server with the fewest tenants (ties by name), never beyond a server's capacity under a burst,
never on a cordoned server; no room is a PROVISION_ERROR that retry-provisioning mends once
there is room; a server that is down holds its tenants until it is back."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from tenancy.fleet import ServerState, StorageServer
from tenancy.models import Tenant
from tenancy.status import TenantStatus
from tests.conftest import unique_id, with_database
from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from tests.support.storage import storage_exists
from tests.support.storage_fleet import STORAGE_DATABASE, FleetStage
from tests.support.tcp_proxy import TcpProxy, through

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SETTLED = {TenantStatus.ACTIVE, TenantStatus.PROVISION_ERROR}


def body(tenant_id: str, tier: str = "BASIC", mode: str = "SCHEMA") -> dict[str, str]:
    return {"id": tenant_id, "name": tenant_id, "storageMode": mode, "slaTier": tier}


async def settled(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    """The tenant once ACTIVE or PROVISION_ERROR."""

    async def read() -> dict[str, Any]:
        return dict((await api.get(f"/api/tenants/{tenant_id}")).json())

    found = await eventually(read, lambda t: t.get("status") in SETTLED, timeout=60)
    assert found is not None
    return found


async def provision(api: httpx.AsyncClient, tenant_id: str, **spec: str) -> dict[str, Any]:
    created = await api.post("/api/tenants", json=body(tenant_id, **spec))
    assert created.status_code == 202, created.text
    return await settled(api, tenant_id)


def port_of(jdbc_url: str) -> int | None:
    return urlsplit(jdbc_url.removeprefix("jdbc:")).port


def storage_on(stage: FleetStage, index: int, tenant_id: str, mode: str) -> bool:
    """Whether the tenant's storage exists on server `index` (as the superuser sees it)."""
    database = stage.storage_database if index == 0 else STORAGE_DATABASE
    return storage_exists(with_database(stage.urls[index], database), tenant_id, mode)


async def test_tenants_go_to_their_tier_s_pool_and_the_server_with_the_fewest(
    temporal_client: Client, fleet_stage: FleetStage, keys_dir: Path
) -> None:
    service = ScriptedService()
    with serve(service.app()) as url:
        settings = fleet_stage.settings(
            (("backend-service", url),),
            servers=[
                fleet_stage.server("pg-b", 2, "shared", 10),
                fleet_stage.server("pg-a", 1, "shared", 10),
                fleet_stage.server("pg-dedicated", 0, "dedicated", 5, storageModes=["DATABASE"]),
            ],
            placement={"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"},
        )
        basics = [unique_id("plc") for _ in range(4)]
        premium, premium_schema = unique_id("plcp"), unique_id("plcs")
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            # One after another: each placement sees the ones before it.
            placed = [await provision(api, t) for t in basics]
            dedicated = await provision(api, premium, tier="PREMIUM", mode="DATABASE")
            refused = await provision(api, premium_schema, tier="PREMIUM", mode="SCHEMA")

    # Ties go by name (pg-a before pg-b, whatever the configuration order), then the fewest.
    assert [t["storageServer"] for t in placed] == ["pg-a", "pg-b", "pg-a", "pg-b"]
    assert all(t["status"] == "ACTIVE" for t in placed)
    ports = {name: urlsplit(fleet_stage.urls[i]).port for name, i in (("pg-a", 1), ("pg-b", 2))}
    for tenant in placed:
        assert port_of(tenant["jdbcUrl"]) == ports[tenant["storageServer"]]
        index = 1 if tenant["storageServer"] == "pg-a" else 2
        assert storage_on(fleet_stage, index, tenant["id"], "SCHEMA")
        assert not storage_on(fleet_stage, 3 - index, tenant["id"], "SCHEMA")
    # PREMIUM goes to its own pool, whose server takes databases only.
    assert (dedicated["status"], dedicated["storageServer"]) == ("ACTIVE", "pg-dedicated")
    assert port_of(dedicated["jdbcUrl"]) == urlsplit(fleet_stage.main).port
    assert storage_on(fleet_stage, 0, premium, "DATABASE")
    assert not storage_on(fleet_stage, 1, premium, "DATABASE")
    assert refused["status"] == "PROVISION_ERROR"
    assert refused["statusReason"] == (
        'no storage server with room in pool "dedicated" for PREMIUM SCHEMA tenants'
    )
    assert refused["storageServer"] is None
    assert refused["jdbcUrl"] is None
    assert service.calls_for(premium_schema) == []


async def test_a_burst_fills_a_pool_exactly_and_the_rest_are_placed_once_there_is_room(
    temporal_client: Client,
    fleet_stage: FleetStage,
    keys_dir: Path,
) -> None:
    service = ScriptedService()
    with serve(service.app()) as url:
        servers = [
            fleet_stage.server("pg-a", 1, "shared", 12),
            fleet_stage.server("pg-b", 2, "shared", 13),
        ]
        settings = fleet_stage.settings((("backend-service", url),), servers=servers)
        ids = [unique_id("burst") for _ in range(40)]
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            answers = await asyncio.gather(*(api.post("/api/tenants", json=body(t)) for t in ids))
            assert [a.status_code for a in answers] == [202] * 40
            first = await asyncio.gather(*(settled(api, t) for t in ids))

        # Room added: a third server in the pool, on the same metadata database.
        more = StorageServer.model_validate(fleet_stage.server("pg-c", 0, "shared", 20))
        roomier = settings.model_copy(update={"storage_servers": (*settings.storage_servers, more)})
        refused = [t["id"] for t in first if t["status"] == "PROVISION_ERROR"]
        async with api_client(roomier, keys_dir, temporal=temporal_client) as api:
            retries = await asyncio.gather(
                *(api.post(f"/api/tenants/{t}/retry-provisioning") for t in refused)
            )
            assert [r.status_code for r in retries] == [202] * len(refused)
            second = await asyncio.gather(*(settled(api, t) for t in refused))

    statuses = Counter(t["status"] for t in first)
    assert statuses == {"ACTIVE": 25, "PROVISION_ERROR": 15}
    assert Counter(t["storageServer"] for t in first if t["status"] == "ACTIVE") == {
        "pg-a": 12,
        "pg-b": 13,
    }
    for tenant in first:
        if tenant["status"] == "PROVISION_ERROR":
            assert tenant["statusReason"] == (
                'no storage server with room in pool "shared" for BASIC SCHEMA tenants'
            )
            assert tenant["storageServer"] is None
    assert [t["status"] for t in second] == ["ACTIVE"] * 15
    assert {t["storageServer"] for t in second} == {"pg-c"}
    assert all(storage_on(fleet_stage, 0, t, "SCHEMA") for t in refused)


async def test_a_cordoned_server_takes_no_new_tenant_and_keeps_its_own(
    temporal_client: Client, fleet_stage: FleetStage, keys_dir: Path
) -> None:
    service = ScriptedService()
    with serve(service.app()) as url:
        settings = fleet_stage.settings(
            (("backend-service", url),),
            servers=[
                fleet_stage.server("pg-a", 1, "shared", 10),
                fleet_stage.server("pg-b", 2, "shared", 10),
            ],
        )
        async with (
            AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool,
            api_client(settings, keys_dir, temporal=temporal_client) as api,
        ):
            servers = ServerRepository(pool)
            resident = await provision(api, unique_id("cord"))
            assert resident["storageServer"] == "pg-a"
            await servers.set_state("pg-a", ServerState.CORDONED, "ops", "disk swap")
            # pg-a has fewer tenants, but is cordoned.
            elsewhere = [await provision(api, unique_id("cord")) for _ in range(2)]
            await servers.set_state("pg-b", ServerState.CORDONED, "ops", "disk swap")
            nowhere = await provision(api, unique_id("cord"))
            await servers.set_state("pg-a", ServerState.ACTIVE, "ops", "swapped")
            retried = await api.post(f"/api/tenants/{nowhere['id']}/retry-provisioning")
            assert retried.status_code == 202, retried.text
            placed = await settled(api, nowhere["id"])
            kept = (await api.get(f"/api/tenants/{resident['id']}")).json()
            events = await servers.events("pg-a")

    assert [t["storageServer"] for t in elsewhere] == ["pg-b", "pg-b"]
    assert nowhere["status"] == "PROVISION_ERROR"
    assert nowhere["statusReason"] == (
        'no storage server with room in pool "shared" for BASIC SCHEMA tenants'
    )
    assert (placed["status"], placed["storageServer"]) == ("ACTIVE", "pg-a")
    # The cordon changed nothing for the tenant already there.
    assert (kept["status"], kept["storageServer"]) == ("ACTIVE", "pg-a")
    assert storage_on(fleet_stage, 1, resident["id"], "SCHEMA")
    assert [(e.type.value, e.actor, e.reason) for e in events] == [
        ("CORDONED", "ops", "disk swap"),
        ("UNCORDONED", "ops", "swapped"),
    ]


async def test_a_server_that_is_down_holds_its_tenant_until_it_is_back(
    temporal_client: Client, fleet_stage: FleetStage, keys_dir: Path, tenants: TenantRepository
) -> None:
    target = urlsplit(fleet_stage.extra[0])
    proxy = TcpProxy(free_port(), target.hostname or "127.0.0.1", target.port or 5432)
    service = ScriptedService()
    down = fleet_stage.server("pg-a", 1, "shared", 10)
    down["url"] = through(down["url"], proxy.port)
    with serve(service.app()) as url:
        settings = fleet_stage.settings((("backend-service", url),), servers=[down])
        tenant_id = unique_id("down")
        try:
            async with (
                AsyncConnectionPool(
                    settings.require_database_url(), min_size=1, max_size=2
                ) as pool,
                api_client(settings, keys_dir, temporal=temporal_client) as api,
            ):
                created = await api.post("/api/tenants", json=body(tenant_id))
                assert created.status_code == 202, created.text
                rows = TenantRepository(pool)

                def waiting(t: Tenant | None) -> bool:
                    return t is not None and t.status_reason is not None

                held = await eventually(lambda: rows.get(tenant_id), waiting, timeout=60)
                await proxy.start()
                done = await settled(api, tenant_id)
        finally:
            await proxy.stop()

    assert held is not None
    assert held.status is TenantStatus.PROVISIONING
    assert held.storage_server == "pg-a"
    assert held.status_reason is not None
    assert held.status_reason.startswith("storage creation on pg-a failed, retrying")
    assert (done["status"], done["storageServer"]) == ("ACTIVE", "pg-a")
    assert port_of(done["jdbcUrl"]) == proxy.port


async def test_the_services_migrate_tenants_on_every_server_with_their_own_roles(
    temporal_client: Client,
    fleet_stage: FleetStage,
    keys_dir: Path,
    reference_services: list[tuple[str, str]],
) -> None:
    settings = fleet_stage.settings(
        tuple(reference_services),
        servers=[
            fleet_stage.server("pg-shared", 1, "shared", 10),
            fleet_stage.server("pg-dedicated", 2, "dedicated", 10),
        ],
        placement={"BASIC": "shared", "PREMIUM": "dedicated"},
    )
    shared, dedicated = unique_id("svc"), unique_id("svc")
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        on_shared = await provision(api, shared, tier="BASIC", mode="SCHEMA")
        on_dedicated = await provision(api, dedicated, tier="PREMIUM", mode="DATABASE")

    assert (on_shared["status"], on_shared["storageServer"]) == ("ACTIVE", "pg-shared")
    assert (on_dedicated["status"], on_dedicated["storageServer"]) == ("ACTIVE", "pg-dedicated")
    # Each service's tables were created by its own role on the tenant's server, and the
    # platform's role there is no superuser.
    with psycopg.connect(with_database(fleet_stage.extra[0], STORAGE_DATABASE)) as conn:
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s",
            (f"tenant_{shared}",),
        ).fetchall()
        platform = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'platform'"
        ).fetchone()
    with psycopg.connect(with_database(fleet_stage.extra[1], f"tenant_{dedicated}")) as conn:
        dedicated_owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    assert {o for (o,) in owners} == {"backend_service", "auth_service"}
    assert {o for (o,) in dedicated_owners} == {"backend_service", "auth_service"}
    assert platform == (False,)
