"""Two real servers for the tests that let a worker run a move from an operator's tool (the
CLI, the console, the reconciler): `pg-a` and `pg-b` on `fleet_stage`'s extra PostgreSQL
servers, one pool for every tier, the scripted backend and auth services, the API reads such a
test waits on, and a hold on the target that keeps a move in PREPARING."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import psycopg
from psycopg import sql

from infra.db.storage import lock_storage
from tenancy.models import StorageMode
from tenancy.settings import Settings
from tests.support.move_storage import BACKEND, as_service, fill_storage, qualified, storage_side
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import FleetStage

ONE_POOL = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "shared"}
Services = tuple[tuple[str, str], ...]


@contextmanager
def scripted_services() -> Iterator[Services]:
    """The backend and auth services, answering every migration."""
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


def extra_server(fleet_stage: FleetStage, name: str) -> str:
    """The superuser URL of the PostgreSQL server under `name` (pg-a or pg-b)."""
    return fleet_stage.extra[("pg-a", "pg-b").index(name)]


def other_server(name: str) -> str:
    """The one of pg-a and pg-b that is not `name`."""
    return "pg-b" if name == "pg-a" else "pg-a"


def two_server_settings(fleet_stage: FleetStage, services: Services, **overrides: Any) -> Settings:
    """pg-a on the first extra server, pg-b on the second, one pool for every tier."""
    return fleet_stage.settings(
        services,
        [
            fleet_stage.server("pg-a", 1, "shared", 10),
            fleet_stage.server("pg-b", 2, "shared", 10),
        ],
        ONE_POOL,
        **overrides,
    )


async def tenant_becomes(
    api: httpx.AsyncClient, tenant_id: str, status: str, timeout: float = 90
) -> dict[str, Any]:
    """The tenant once it is in `status` (polled through the API)."""

    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

    found: dict[str, Any] = await eventually(
        probe, lambda t: t["status"] == status, timeout=timeout
    )
    return found


async def provision(api: httpx.AsyncClient, tenant_id: str, mode: str = "SCHEMA") -> dict[str, Any]:
    """An ACTIVE STANDARD tenant, provisioned through the API (on the server of the pool that
    placement picked)."""
    body = {"id": tenant_id, "name": "Moving", "storageMode": mode, "slaTier": "STANDARD"}
    created = await api.post("/api/tenants", json=body)
    assert created.status_code == 202, created.text
    return await tenant_becomes(api, tenant_id, "ACTIVE")


async def actions(api: httpx.AsyncClient, tenant_id: str) -> list[tuple[str, str | None]]:
    """The tenant's audit trail, oldest first: (action, reason)."""
    events = (await api.get(f"/api/tenants/{tenant_id}/events")).json()["items"]
    return [(e["action"], e.get("reason")) for e in events]


@asynccontextmanager
async def target_held(fleet_stage: FleetStage, tenant_id: str, target: str) -> AsyncIterator[None]:
    """The storage lock of the SCHEMA tenant's schema on `target` held: a move onto it waits
    in PREPARING until the block ends."""
    async with storage_side(extra_server(fleet_stage, target)) as side_b:
        at_b = side_b.admin.locate(tenant_id, StorageMode.SCHEMA)
        async with await psycopg.AsyncConnection.connect(
            side_b.platform_url, autocommit=True
        ) as holder:
            await lock_storage(holder, at_b.schema_name, session=True)
            yield


async def copy_will_fail(fleet_stage: FleetStage, tenant_id: str, server: str) -> None:
    """Fill the SCHEMA tenant's storage on `server` (its own), with row security on one
    service's table: pg_dump refuses to dump a part of it, so a move of it fails in COPYING."""
    async with storage_side(extra_server(fleet_stage, server)) as side_a:
        at_a = side_a.admin.locate(tenant_id, StorageMode.SCHEMA)
        fill_storage(side_a, at_a)
        with as_service(side_a, BACKEND, at_a) as conn:
            conn.execute(
                sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(
                    qualified(at_a, "order_notes")
                )
            )
