"""A fleet for the tests of tenant moves and updates: named servers over two of `FleetStage`'s
PostgreSQL servers (a metadata database of the test's own, where tenants are placed), ACTIVE
tenants placed on them as provisioning places them (rows only: no worker runs a move in these
tests), and reads of what a move wrote (the row's epoch, the outbox, `retained_storage`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.service import RPCError
from yoyo import get_backend, read_migrations

from infra.db.repository import TenantRepository
from infra.db.schema import MIGRATIONS_DIR
from infra.db.servers import ServerRepository
from infra.db.tenant_moves import MoveRepository
from tenancy.fleet import ServerState
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import storage_location
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.support.storage_fleet import FleetStage
from workflows.move.contracts import move_workflow_id

# shared: pg-a, pg-b (BASIC, STANDARD); dedicated: pg-c (PREMIUM); spare (no tier): pg-full
# (room for none), pg-db (DATABASE tenants only) and pg-twin. pg-a, pg-db and pg-twin are the
# session's server, the others the first extra one.
PLACEMENT = {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"}


def move_fleet_settings(fleet_stage: FleetStage, **overrides: object) -> Settings:
    """The moves' fleet over a metadata database of the test's own."""
    return fleet_stage.settings(
        (),
        servers=[
            fleet_stage.server("pg-a", 0, "shared", 10),
            fleet_stage.server("pg-b", 1, "shared", 10),
            fleet_stage.server("pg-c", 1, "dedicated", 5),
            fleet_stage.server("pg-full", 1, "spare", 0),
            fleet_stage.server("pg-db", 0, "spare", 5, storageModes=["DATABASE"]),
            fleet_stage.server("pg-twin", 0, "spare", 5),
        ],
        placement=PLACEMENT,
        **overrides,
    )


@dataclass
class MoveStage:
    """A test's metadata database through the repositories a move uses."""

    settings: Settings
    tenants: TenantRepository
    servers: ServerRepository
    moves: MoveRepository
    pool: AsyncConnectionPool[Any]

    async def active(
        self,
        tenant_id: str,
        tier: SlaTier = SlaTier.BASIC,
        mode: StorageMode = StorageMode.SCHEMA,
        status: TenantStatus = TenantStatus.ACTIVE,
    ) -> str:
        """A tenant placed as provisioning places it, with its jdbcUrl, taken along the
        machine to `status` (ACTIVE, or an error status on the way); its server's name."""
        spec = TenantSpec(id=tenant_id, name=tenant_id, storage_mode=mode, sla_tier=tier)
        await self.tenants.insert(spec, f"tenant-provision-{tenant_id}", "seeded", [], "seed")
        server = await self.servers.place(
            tenant_id, self.settings.storage_fleet(), self.settings.placement_map()
        )
        url = next(s.dsn for s in self.settings.storage_fleet() if s.name == server)
        await self.tenants.set_jdbc_url(tenant_id, storage_location(url, mode, tenant_id).jdbc_url)
        path = {
            TenantStatus.PROVISION_ERROR: [TenantStatus.PROVISION_ERROR],
            TenantStatus.MIGRATION_ERROR: [TenantStatus.MIGRATING, TenantStatus.MIGRATION_ERROR],
        }.get(status, [TenantStatus.MIGRATING, TenantStatus.ACTIVE])
        for step in path:
            await self.tenants.transition(tenant_id, step, None, "seed")
        return server

    async def cordon(self, name: str) -> None:
        """Cordon a server as the API does."""
        await self.servers.set_state(name, ServerState.CORDONED, "seed", "test")

    async def epoch(self, tenant_id: str) -> int:
        """The tenant's epoch."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT epoch FROM tenants WHERE id = %s", (tenant_id,))
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def outbox(self, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The tenant's lifecycle events in the outbox, oldest first: (name, event)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT name, event FROM event_outbox WHERE subject_key = %s ORDER BY seq",
                (tenant_id,),
            )
            return [(name, event) for name, event in await cur.fetchall()]

    async def retained(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's `retained_storage` rows, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT server, mode, database, schema_name, drop_after, dropped_at "
                "FROM retained_storage WHERE tenant_id = %s ORDER BY id",
                (tenant_id,),
            )
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


@asynccontextmanager
async def move_stage(settings: Settings) -> AsyncIterator[MoveStage]:
    """The repositories over the settings' metadata database."""
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=4) as pool:
        yield MoveStage(
            settings, TenantRepository(pool), ServerRepository(pool), MoveRepository(pool), pool
        )


async def move_run(client: Client, tenant_id: str) -> Any:
    """The description of the tenant's move run (`tenant-move-{id}`), or None when there is
    none."""
    try:
        return await client.get_workflow_handle(move_workflow_id(tenant_id)).describe()
    except RPCError:
        return None


async def end_move_runs(client: Client, tenant_ids: list[str]) -> None:
    """Terminate the move runs the tests started (no worker ever takes them)."""
    for tenant_id in tenant_ids:
        with suppress(RPCError):
            await client.get_workflow_handle(move_workflow_id(tenant_id)).terminate("test over")


def roll_back_migration(url: str, migration_id: str) -> None:
    """Run one metadata migration's rollback on the database at `url`, as yoyo does."""
    backend = get_backend(f"postgresql+psycopg://{url.partition('://')[2]}")
    try:
        with backend.lock():
            migrations = read_migrations(str(MIGRATIONS_DIR))
            one = migrations.__class__([m for m in migrations if m.id == migration_id])
            backend.rollback_migrations(backend.to_rollback(one))
    finally:
        backend.connection.close()


def make_schema(url: str, tenant_id: str, *, drop: bool = False) -> None:
    """Create (or drop) tenant `tenant_id`'s schema in the database at `url` (superuser): the
    storage a move leaves on a server, as the reconciler finds it."""
    statement = "DROP SCHEMA IF EXISTS {} CASCADE" if drop else "CREATE SCHEMA {}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(f"tenant_{tenant_id}")))
