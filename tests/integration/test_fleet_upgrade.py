"""An installation from before storage servers: the metadata migration records every tenant on
the one server it had, `default`, which the settings without a server list still name; a list
that forgets it is refused, naming it and its tenants."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from yoyo import get_backend, read_migrations

from infra.db.schema import MIGRATIONS_DIR, apply_platform_migrations
from infra.db.server_checks import FleetMismatch, refuse_missing_servers
from infra.db.servers import ServerRepository
from tenancy.settings import Settings
from tests.conftest import with_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FLEET_MIGRATION = "0014_storage_servers"


def migrate_before_servers(url: str) -> None:
    """The metadata schema as it was before storage servers."""
    backend = get_backend(f"postgresql+psycopg://{url.partition('://')[2]}")
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            earlier = [m for m in migrations if m.id < FLEET_MIGRATION]
            backend.apply_migrations(backend.to_apply(migrations.__class__(earlier)))
    finally:
        backend.connection.close()


async def test_existing_tenants_are_recorded_on_the_default_server(pg_server_url: str) -> None:
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(pg_server_url, name)
    migrate_before_servers(url)
    with psycopg.connect(url) as conn:
        for tenant_id, status in (("old_active", "ACTIVE"), ("old_failed", "PROVISION_ERROR")):
            conn.execute(
                "INSERT INTO tenants (id, name, storage_mode, sla_tier, status, workflow_id, "
                "workflow_run_id) VALUES (%s, %s, 'SCHEMA', 'BASIC', %s, 'wf', 'run')",
                (tenant_id, tenant_id, status),
            )

    applied = apply_platform_migrations(url)

    # Later migrations follow it (0015: the tenants' epoch, 1 for those that exist).
    assert applied[0] == FLEET_MIGRATION
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, storage_server, epoch FROM tenants ORDER BY id").fetchall()
    assert rows == [("old_active", "default", 1), ("old_failed", "default", 1)]
    async with AsyncConnectionPool(url, min_size=1, max_size=2) as pool:
        servers = ServerRepository(pool)
        # Unchanged settings: one server `default`, which they live on.
        await refuse_missing_servers(Settings(database_url=url).storage_fleet(), servers)
        records = await servers.records(["default"])
        listed = Settings(
            database_url=url,
            storage_servers=[
                {"name": "pg-new", "url": "postgresql://p:S3cret@db:5432/t", "maxTenants": 9}
            ],
        )
        with pytest.raises(FleetMismatch) as refused:
            await refuse_missing_servers(listed.storage_fleet(), servers)
    assert records["default"].tenants == 2
    assert "'default' (2 tenants)" in str(refused.value)
    assert "S3cret" not in str(refused.value)
