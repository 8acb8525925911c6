"""Migrations really applied into tenant schemas and databases (in-process app, real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import yoyo.exceptions

from examples.downstream_service.migrator import LOCK_CLASS, load_migrations
from examples.downstream_service.settings import MIGRATIONS_ROOT
from tests.downstream.helpers import (
    Payload,
    app_client,
    applied_log,
    migrate_path,
    tables_in,
    with_database,
    yoyo_backend,
)
from tests.downstream.tokens import PlatformKey

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
AUTH_VERSIONS = ["auth_0001_users", "auth_0002_sessions_roles"]
YOYO_TABLES = {"_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock"}
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


async def test_schema_mode_applies_every_version_into_the_schema(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    pg_server_url: str,
) -> None:
    body = await _migrate(backend_client, platform, schema_tenant)

    assert body == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    schema = schema_tenant["schema"]
    assert tables_in(pg_server_url, "postgres", schema) == BACKEND_TABLES | YOYO_TABLES
    assert "archived_at" in _columns(pg_server_url, "postgres", schema, "projects")
    assert "projects_active_by_account_idx" in _indexes(pg_server_url, "postgres", schema)
    assert applied_log(pg_server_url, "postgres", schema) == BACKEND_VERSIONS


async def test_database_mode_applies_every_version_into_the_database(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    database_tenant: Payload,
    pg_server_url: str,
) -> None:
    body = await _migrate(backend_client, platform, database_tenant)

    assert body == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    database = database_tenant["database"]
    assert tables_in(pg_server_url, database, "public") == BACKEND_TABLES | YOYO_TABLES
    assert "archived_at" in _columns(pg_server_url, database, "public", "projects")
    assert applied_log(pg_server_url, database, "public") == BACKEND_VERSIONS


async def test_second_call_applies_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    pg_server_url: str,
) -> None:
    first = await _migrate(backend_client, platform, schema_tenant)
    second = await _migrate(backend_client, platform, schema_tenant)

    assert first["applied"] == BACKEND_VERSIONS
    assert second == {"version": first["version"], "applied": []}
    assert applied_log(pg_server_url, "postgres", schema_tenant["schema"]) == BACKEND_VERSIONS


async def test_services_apply_their_own_migration_sets(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    pg_server_url: str,
) -> None:
    schema = schema_tenant["schema"]
    backend = await _migrate(backend_client, platform, schema_tenant)
    assert tables_in(pg_server_url, "postgres", schema) == BACKEND_TABLES | YOYO_TABLES

    async with app_client(platform.settings(pg_server_url, service_name="auth-service")) as auth:
        auth_body = await _migrate(auth, platform, schema_tenant, "auth-service")
        auth_again = await _migrate(auth, platform, schema_tenant, "auth-service")

    assert backend == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert auth_body == {"version": AUTH_VERSIONS[-1], "applied": AUTH_VERSIONS}
    assert auth_again == {"version": AUTH_VERSIONS[-1], "applied": []}
    assert tables_in(pg_server_url, "postgres", schema) == (
        BACKEND_TABLES | AUTH_TABLES | YOYO_TABLES
    )
    # Both services share the tenant's yoyo history, each entry once.
    assert applied_log(pg_server_url, "postgres", schema) == BACKEND_VERSIONS + AUTH_VERSIONS


async def test_rollback_files_undo_the_migrations(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    pg_server_url: str,
) -> None:
    schema = schema_tenant["schema"]
    await _migrate(backend_client, platform, schema_tenant)

    migrations = load_migrations(MIGRATIONS_ROOT / "backend-service")
    with yoyo_backend(pg_server_url, schema) as backend, backend.lock():
        backend.rollback_migrations(backend.to_rollback(migrations))
    assert tables_in(pg_server_url, "postgres", schema) == YOYO_TABLES

    again = await _migrate(backend_client, platform, schema_tenant)
    assert again == {"version": BACKEND_VERSIONS[-1], "applied": BACKEND_VERSIONS}
    assert tables_in(pg_server_url, "postgres", schema) == BACKEND_TABLES | YOYO_TABLES


async def test_backends_do_not_grow_yoyos_global_error_registry(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    before = len(yoyo.exceptions.DatabaseErrors)
    await _migrate(backend_client, platform, schema_tenant)
    await _migrate(backend_client, platform, schema_tenant)
    assert len(yoyo.exceptions.DatabaseErrors) == before


async def test_a_held_lock_answers_busy_and_a_dead_holder_releases_it(
    platform: PlatformKey, schema_tenant: Payload, pg_server_url: str
) -> None:
    """The lock is PostgreSQL's advisory lock: a caller waits at most `lock_timeout`, and a
    holder whose connection ends (a killed process's does) leaves nothing behind."""
    tenant_id, schema = schema_tenant["tenantId"], schema_tenant["schema"]
    headers = platform.headers
    settings = platform.settings(pg_server_url, lock_timeout=0.3)
    holder = psycopg.connect(pg_server_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
    async with app_client(settings) as client:
        busy = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=headers(tenant_id)
        )
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "migration_busy"
        assert BACKEND_TABLES.isdisjoint(tables_in(pg_server_url, "postgres", schema))

        holder.close()
        done = await client.post(
            migrate_path(tenant_id), json=schema_tenant, headers=headers(tenant_id)
        )
    assert done.status_code == 200, done.text
    assert done.json()["applied"] == BACKEND_VERSIONS
