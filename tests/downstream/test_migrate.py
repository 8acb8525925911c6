"""Migrations really applied into tenant schemas and databases (in-process app, real PostgreSQL),
each service with its own role, its own history table and its own lock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from examples.downstream_service.app import create_app
from examples.downstream_service.models import StorageAddress, parse_jdbc_url
from examples.downstream_service.pools import StoragePools
from examples.downstream_service.repository import SchemaHistory, history_table_name
from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    history,
    migrate_path,
    rollback_all,
    schema_payload,
    tables_in,
    with_database,
)
from tests.downstream.tokens import PlatformKey
from tests.support.polling import eventually

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
AUTH_VERSIONS = ["auth_0001_users", "auth_0002_sessions_roles"]
BACKEND_HISTORY = history_table_name("backend-service")
AUTH_HISTORY = history_table_name("auth-service")
BACKEND_TABLES = {"accounts", "projects"}
AUTH_TABLES = {"users", "roles", "user_roles", "sessions"}


async def _migrate(
    client: httpx.AsyncClient,
    platform: PlatformKey,
    payload: Payload,
    audience: str = "backend-service",
) -> dict[str, Any]:
    tenant_id = payload["tenantId"]
    response = await client.post(
        migrate_path(tenant_id), json=payload, headers=platform.headers(tenant_id, audience)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _columns(url: str, database: str, schema: str, table: str) -> set[str]:
    with psycopg.connect(with_database(url, database)) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    return {row[0] for row in rows}


def _indexes(url: str, database: str, schema: str) -> set[str]:
    with psycopg.connect(with_database(url, database)) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def _owners(url: str, database: str, schema: str) -> dict[str, str]:
    with psycopg.connect(with_database(url, database)) as conn:
        rows = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {row[0]: row[1] for row in rows}


def _hold_lock(storage: Storage, database: str, key: str) -> psycopg.Connection[Any]:
    """A session holding the advisory lock `key` in `database` until it is closed."""
    holder = psycopg.connect(storage.url(database), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    return holder


async def test_schema_mode_applies_every_version_into_the_schema(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    body = await _migrate(backend_client, platform, schema_tenant)

    assert body == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    assert tables_in(url, database, schema) == BACKEND_TABLES | {BACKEND_HISTORY}
    assert "archived_at" in _columns(url, database, schema, "projects")
    assert "projects_active_by_account_idx" in _indexes(url, database, schema)
    assert history(url, database, schema) == BACKEND_VERSIONS
    # Created by, hence owned by, the service's own role.
    assert set(_owners(url, database, schema).values()) == {storage.role()}


async def test_database_mode_applies_every_version_into_the_database(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    database_tenant: Payload,
    storage: Storage,
) -> None:
    body = await _migrate(backend_client, platform, database_tenant)

    assert body == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    url, database = storage.superuser_url, database_tenant["database"]
    assert tables_in(url, database, "public") == BACKEND_TABLES | {BACKEND_HISTORY}
    assert "archived_at" in _columns(url, database, "public", "projects")
    assert history(url, database, "public") == BACKEND_VERSIONS


async def test_second_call_applies_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    first = await _migrate(backend_client, platform, schema_tenant)
    second = await _migrate(backend_client, platform, schema_tenant)

    assert first["applied"] == BACKEND_VERSIONS
    assert second == {"version": first["version"], "applied": []}
    assert history(storage.superuser_url, storage.database, schema_tenant["schema"]) == (
        BACKEND_VERSIONS
    )


async def test_an_up_to_date_tenant_takes_no_lock(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    """The fast path: a tenant at the newest version answers from one read, so even a held
    migration lock does not make it wait (a call that took the lock would answer busy)."""
    await _migrate(backend_client, platform, schema_tenant)
    key = SchemaHistory("backend-service").lock_key(schema_tenant["schema"])
    holder = _hold_lock(storage, storage.database, key)
    try:
        again = await _migrate(backend_client, platform, schema_tenant)
    finally:
        holder.close()
    assert again == {"version": BACKEND_VERSIONS[-1], "applied": []}


async def test_services_keep_their_own_histories(
    backend_client: httpx.AsyncClient,
    auth_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    backend = await _migrate(backend_client, platform, schema_tenant)
    assert tables_in(url, database, schema) == BACKEND_TABLES | {BACKEND_HISTORY}

    auth_body = await _migrate(auth_client, platform, schema_tenant, "auth-service")
    auth_again = await _migrate(auth_client, platform, schema_tenant, "auth-service")

    assert backend == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert auth_body == {"version": AUTH_VERSIONS[-1], "applied": AUTH_VERSIONS}
    assert auth_again == {"version": AUTH_VERSIONS[-1], "applied": []}
    assert tables_in(url, database, schema) == (
        BACKEND_TABLES | AUTH_TABLES | {BACKEND_HISTORY, AUTH_HISTORY}
    )
    assert history(url, database, schema) == BACKEND_VERSIONS
    assert history(url, database, schema, "auth-service") == AUTH_VERSIONS
    owners = _owners(url, database, schema)
    assert {owners[table] for table in AUTH_TABLES | {AUTH_HISTORY}} == {
        storage.role("auth-service")
    }


async def test_two_services_migrate_one_tenant_without_waiting_for_each_other(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    tmp_path: Path,
) -> None:
    """While auth-service is inside a slow migration of the tenant (holding its lock),
    backend-service migrates the same tenant to the end: they share neither lock nor history."""
    slow = tmp_path / "slow-auth"
    slow.mkdir()
    (slow / "auth_0001_slow.sql").write_text(
        "CREATE TABLE slow_auth (id INT);\nSELECT pg_sleep(3);\n"
    )
    settings = platform.settings(
        storage.service_url("auth-service"), service_name="auth-service", migrations_dir=slow
    )
    async with app_client(settings) as auth_client:
        auth_call = asyncio.create_task(
            _migrate(auth_client, platform, schema_tenant, "auth-service")
        )
        await eventually(
            lambda: asyncio.to_thread(_sleeping, storage, storage.role("auth-service")),
            bool,
            timeout=10,
        )
        backend = await _migrate(backend_client, platform, schema_tenant)
        assert backend["applied"] == BACKEND_VERSIONS
        assert not auth_call.done(), "backend-service waited for auth-service's migration"
        auth_body = await asyncio.wait_for(auth_call, timeout=15)
    assert auth_body == {"version": "auth_0001_slow", "applied": ["auth_0001_slow"]}


def _sleeping(storage: Storage, role: str) -> bool:
    with psycopg.connect(storage.superuser_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND query LIKE %s",
            (role, "%pg_sleep%"),
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("table", ["accounts", BACKEND_HISTORY])
async def test_a_service_role_cannot_touch_another_services_tables(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    table: str,
) -> None:
    await _migrate(backend_client, platform, schema_tenant)
    name = sql.Identifier(schema_tenant["schema"], table)
    auth_url = with_database(storage.service_url("auth-service"), storage.database)
    statements = [
        sql.SQL("SELECT * FROM {}").format(name),
        sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
        sql.SQL("DELETE FROM {}").format(name),
        sql.SQL("ALTER TABLE {} ADD COLUMN intruder INT").format(name),
        sql.SQL("DROP TABLE {}").format(name),
    ]
    with psycopg.connect(auth_url, autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert history(storage.superuser_url, storage.database, schema_tenant["schema"]) == (
        BACKEND_VERSIONS
    )


async def test_rollback_files_undo_the_migrations(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    await _migrate(backend_client, platform, schema_tenant)

    assert rollback_all(storage, schema_tenant) == BACKEND_VERSIONS[::-1]
    assert tables_in(url, database, schema) == {BACKEND_HISTORY}
    assert history(url, database, schema) == []

    again = await _migrate(backend_client, platform, schema_tenant)
    assert again == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert tables_in(url, database, schema) == BACKEND_TABLES | {BACKEND_HISTORY}


async def test_a_held_lock_answers_busy_and_a_dead_holder_releases_it(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    """The lock is PostgreSQL's advisory lock: a caller waits at most `lock_timeout`, and a
    holder whose connection ends (a killed process's does) leaves nothing behind."""
    tenant_id, schema = schema_tenant["tenantId"], schema_tenant["schema"]
    headers = platform.headers
    settings = platform.settings(storage.service_url(), lock_timeout=0.3)
    holder = _hold_lock(
        storage, storage.database, SchemaHistory("backend-service").lock_key(schema)
    )
    async with app_client(settings) as client:
        busy = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=headers(tenant_id)
        )
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "migration_busy"
        assert BACKEND_TABLES.isdisjoint(tables_in(storage.superuser_url, storage.database, schema))

        holder.close()
        done = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=headers(tenant_id)
        )
    assert done.status_code == 200, done.text
    assert done.json()["applied"] == BACKEND_VERSIONS


async def test_pooled_connections_keep_their_lock_timeout(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    """The lock timeout is the transaction's own: connections the pool hands out afterwards
    still have the role's setting (here 42s), not the migration's and not 0."""
    with psycopg.connect(storage.superuser_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} SET lock_timeout = '42s'").format(sql.Identifier(storage.role()))
        )
    try:
        # One connection, so the call's is the one looked at afterwards.
        settings = platform.settings(storage.service_url(), lock_timeout=0.5, pool_max_size=1)
        app = create_app(settings)
        tenant_id, address = schema_tenant["tenantId"], parse_jdbc_url(schema_tenant["jdbcUrl"])
        async with app_client(app) as client:
            pools = app.state.migrator._pools
            with pools.connection(address):
                pass  # the first connection is direct; from now on the pool serves
            response = await client.post(
                migrate_path(tenant_id), json=schema_tenant, headers=platform.headers(tenant_id)
            )
            assert response.status_code == 200, response.text
            assert response.json()["applied"] == BACKEND_VERSIONS
            with pools.connection(address) as conn:
                row = conn.execute("SHOW lock_timeout").fetchone()
    finally:
        with psycopg.connect(storage.superuser_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} RESET lock_timeout").format(sql.Identifier(storage.role()))
            )
    assert row == ("42s",)


async def test_the_host_in_jdbc_url_is_the_server_used(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    """localhost and 127.0.0.1 are the same server here, so both migrate; a port where no
    PostgreSQL listens is unreachable storage, whatever DOWNSTREAM_DATABASE_URL says."""
    tenant_id = schema_tenant["tenantId"]
    elsewhere = schema_payload(tenant_id, storage, authority="127.0.0.1:1")
    refused = await backend_client.post(
        migrate_path(tenant_id), json=elsewhere, headers=platform.headers(tenant_id)
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "storage_unavailable"
    assert refused.json()["detail"] == "PostgreSQL at 127.0.0.1:1 is unreachable"

    by_name = schema_payload(tenant_id, storage, authority=f"localhost:{storage.port}")
    body = await _migrate(backend_client, platform, by_name)
    assert body["applied"] == BACKEND_VERSIONS


async def test_a_database_url_naming_the_storage_database_still_works(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    """Deployments that still give every service the storage database's URL (one role for
    all) keep working: the service's own table then lives in that database."""
    settings = platform.settings(storage.url(storage.database))
    async with app_client(settings) as client:
        body = await _migrate(client, platform, schema_tenant)
    assert body == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert "seen_token_ids" in tables_in(storage.superuser_url, storage.database, "public")


def test_pools_are_bounded_and_the_least_recently_used_is_closed(storage: Storage) -> None:
    pools = StoragePools(
        database_url=storage.service_url(),
        application_name="backend-service",
        connect_timeout=timedelta(seconds=5),
        max_size=2,
        max_pools=1,
        max_idle=timedelta(seconds=60),
    )
    host, port = storage.authority.rsplit(":", 1)
    tenants = StorageAddress(host, int(port), storage.database)
    own = StorageAddress(host, int(port), storage.role())
    try:
        with pools.connection(tenants):
            pass
        with pools.connection(tenants) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (storage.database,)
        assert pools.addresses == [tenants]
        with pools.connection(own):
            pass
        assert pools.addresses == [own]
        with pools.connection(tenants) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (storage.role(),)
        assert pools.addresses == [tenants]
    finally:
        pools.close()


async def test_a_database_dropped_under_its_pool_is_409_then_the_pool_is_gone(
    platform: PlatformKey, database_tenant: Payload, storage: Storage
) -> None:
    """The pool only says it timed out; the service finds out why and drops the pool."""
    settings = platform.settings(storage.service_url(), connect_timeout=timedelta(seconds=1))
    app = create_app(settings)
    address = parse_jdbc_url(database_tenant["jdbcUrl"])
    async with app_client(app) as client:
        await _migrate(client, platform, database_tenant)
        await _migrate(client, platform, database_tenant)  # served by the pool
        assert address in app.state.migrator._pools.addresses
        with psycopg.connect(storage.superuser_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(database_tenant["database"])
                )
            )
        tenant_id = database_tenant["tenantId"]
        response = await client.post(
            migrate_path(tenant_id), json=database_tenant, headers=platform.headers(tenant_id)
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "target_missing"
        assert address not in app.state.migrator._pools.addresses
