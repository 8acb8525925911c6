"""`DELETE /internal/tenants/{id}`: a service drops its own objects and its history from a
tenant's storage, and nothing of anyone else's (real PostgreSQL, each service with its own role).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from examples.downstream_service.app import create_app
from examples.downstream_service.models import parse_jdbc_url
from examples.downstream_service.repository import SchemaHistory, history_table_name
from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    database_payload,
    history,
    migrate_path,
    owned_in,
    schema_payload,
    tables_in,
    teardown_path,
    threaded_server,
)
from tests.downstream.tokens import PlatformKey, unsigned
from tests.support.polling import eventually

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]
AUTH_VERSIONS = ["auth_0001_users", "auth_0002_sessions_roles"]
BACKEND_HISTORY = history_table_name("backend-service")
AUTH_HISTORY = history_table_name("auth-service")
BACKEND_DROPPED = sorted(["accounts", "projects", BACKEND_HISTORY])
AUTH_TABLES = {"users", "roles", "user_roles", "sessions", AUTH_HISTORY}


async def _migrate(
    client: httpx.AsyncClient,
    platform: PlatformKey,
    payload: Payload,
    audience: str = "backend-service",
) -> None:
    tenant_id = payload["tenantId"]
    response = await client.post(
        migrate_path(tenant_id), json=payload, headers=platform.headers(tenant_id, audience)
    )
    assert response.status_code == 200, response.text


async def _teardown(
    client: httpx.AsyncClient,
    platform: PlatformKey,
    payload: Payload,
    audience: str = "backend-service",
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    tenant_id: str | None = None,
) -> httpx.Response:
    tenant_id = tenant_id or payload["tenantId"]
    return await client.request(
        "DELETE",
        teardown_path(tenant_id),
        json=payload,
        headers=headers or platform.headers(tenant_id, audience, key=key),
    )


def _backend_objects(storage: Storage, payload: Payload) -> set[str]:
    return owned_in(storage.superuser_url, payload["database"], payload["schema"], storage.role())


def _connections(storage: Storage, database: str, role: str) -> int:
    with psycopg.connect(storage.superuser_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
            (database, role),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_schema_mode_drops_the_services_tables_and_history_over_http(
    schema_tenant: Payload, storage: Storage, platform: PlatformKey
) -> None:
    tenant_id, schema = schema_tenant["tenantId"], schema_tenant["schema"]
    url, database = storage.superuser_url, storage.database
    with threaded_server(create_app(platform.settings(storage.service_url()))) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await _migrate(client, platform, schema_tenant)
            # Identity sequences, indexes and constraints come with the tables.
            assert {"accounts_id_seq", "projects_active_by_account_idx"} <= _backend_objects(
                storage, schema_tenant
            )

            response = await _teardown(client, platform, schema_tenant)

            assert response.status_code == 200, response.text
            assert response.json() == {"tenantId": tenant_id, "dropped": BACKEND_DROPPED}
            assert _backend_objects(storage, schema_tenant) == set()
            assert tables_in(url, database, schema) == set()

            # The service can serve the tenant again: the next migrate starts from scratch.
            await _migrate(client, platform, schema_tenant)
    assert history(url, database, schema) == BACKEND_VERSIONS


async def test_database_mode_drops_them_and_lets_go_of_the_database(
    platform: PlatformKey, database_tenant: Payload, storage: Storage
) -> None:
    """Afterwards the service holds no connection to the tenant database, so the platform's
    DROP DATABASE succeeds even without FORCE."""
    app = create_app(platform.settings(storage.service_url()))
    database = database_tenant["database"]
    async with app_client(app) as client:
        await _migrate(client, platform, database_tenant)
        await _migrate(client, platform, database_tenant)  # served by the pool, which keeps it
        assert _connections(storage, database, storage.role()) > 0

        response = await _teardown(client, platform, database_tenant)

        assert response.status_code == 200, response.text
        assert response.json() == {
            "tenantId": database_tenant["tenantId"],
            "dropped": BACKEND_DROPPED,
        }
        assert _backend_objects(storage, database_tenant) == set()
        assert tables_in(storage.superuser_url, database, "public") == set()
        assert parse_jdbc_url(database_tenant["jdbcUrl"]) not in app.state.migrator._pools.addresses
        await eventually(
            lambda: _async(_connections, storage, database, storage.role()), lambda n: n == 0
        )
        with psycopg.connect(storage.superuser_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(database)))


async def _async(function: Any, *args: Any) -> Any:
    return function(*args)


async def test_another_services_tables_in_the_schema_survive(
    backend_client: httpx.AsyncClient,
    auth_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    await _migrate(backend_client, platform, schema_tenant)
    await _migrate(auth_client, platform, schema_tenant, "auth-service")

    response = await _teardown(backend_client, platform, schema_tenant)

    assert response.status_code == 200, response.text
    assert tables_in(url, database, schema) == AUTH_TABLES
    assert history(url, database, schema, "auth-service") == AUTH_VERSIONS

    auth = await _teardown(auth_client, platform, schema_tenant, "auth-service")
    assert auth.status_code == 200, auth.text
    assert auth.json()["dropped"] == sorted(AUTH_TABLES)
    assert tables_in(url, database, schema) == set()


async def test_another_tenants_objects_of_the_same_service_survive(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    neighbour_tenant: Payload,
    storage: Storage,
) -> None:
    """Same role, same database, another schema: only the named tenant's schema is touched."""
    await _migrate(backend_client, platform, schema_tenant)
    await _migrate(backend_client, platform, neighbour_tenant)
    before = _backend_objects(storage, neighbour_tenant)

    response = await _teardown(backend_client, platform, schema_tenant)

    assert response.status_code == 200, response.text
    assert _backend_objects(storage, schema_tenant) == set()
    assert _backend_objects(storage, neighbour_tenant) == before
    assert history(storage.superuser_url, storage.database, neighbour_tenant["schema"]) == (
        BACKEND_VERSIONS
    )


async def test_a_repeated_teardown_is_404_and_changes_nothing(
    backend_client: httpx.AsyncClient,
    auth_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
) -> None:
    url, database, schema = storage.superuser_url, storage.database, schema_tenant["schema"]
    await _migrate(backend_client, platform, schema_tenant)
    await _migrate(auth_client, platform, schema_tenant, "auth-service")
    first = await _teardown(backend_client, platform, schema_tenant, key="teardown-1")
    assert first.status_code == 200, first.text

    # A retry (same key, new token, as the platform sends it) and a new deletion (new key).
    again = await _teardown(backend_client, platform, schema_tenant, key="teardown-1")
    other = await _teardown(backend_client, platform, schema_tenant, key="teardown-2")

    for response in (again, other):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "nothing_to_tear_down"
    assert tables_in(url, database, schema) == AUTH_TABLES
    assert history(url, database, schema, "auth-service") == AUTH_VERSIONS


async def test_a_tenant_never_migrated_is_404(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    response = await _teardown(backend_client, platform, schema_tenant)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "nothing_to_tear_down"


async def test_a_missing_schema_is_404(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage
) -> None:
    response = await _teardown(
        backend_client, platform, schema_payload(f"ds_{secrets.token_hex(6)}", storage)
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "nothing_to_tear_down"


async def test_a_missing_database_is_404(
    backend_client: httpx.AsyncClient, platform: PlatformKey, storage: Storage
) -> None:
    response = await _teardown(
        backend_client, platform, database_payload(f"ds_{secrets.token_hex(6)}", storage)
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "nothing_to_tear_down"


@pytest.mark.parametrize("problem", ["unsigned", "wrong audience", "replayed"])
async def test_a_call_without_a_valid_platform_token_is_401_and_drops_nothing(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    problem: str,
) -> None:
    tenant_id = schema_tenant["tenantId"]
    token = platform.token(tenant_id)
    # The replayed token is the one the migrate call used.
    migrated = await backend_client.post(
        migrate_path(tenant_id),
        json=schema_tenant,
        headers=platform.headers(tenant_id, token=token),
    )
    assert migrated.status_code == 200, migrated.text
    before = _backend_objects(storage, schema_tenant)
    if problem == "unsigned":
        token = unsigned(token)
    elif problem == "wrong audience":
        token = platform.token(tenant_id, "auth-service")

    response = await _teardown(
        backend_client, platform, schema_tenant, headers=platform.headers(tenant_id, token=token)
    )

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_token"
    assert _backend_objects(storage, schema_tenant) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tenantId": "ds_someone_else", "schema": "tenant_ds_someone_else"}, "tenantId"),
        ({"schema": "public"}, "schema"),
        ({"schema": "tenant_other"}, "schema"),
        ({"storageMode": "CLUSTER"}, "storageMode"),
    ],
)
async def test_a_body_not_naming_this_tenants_storage_is_422(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    change: dict[str, str],
    field: str,
) -> None:
    await _migrate(backend_client, platform, schema_tenant)
    before = _backend_objects(storage, schema_tenant)

    response = await _teardown(
        backend_client, platform, {**schema_tenant, **change}, tenant_id=schema_tenant["tenantId"]
    )

    assert response.status_code == 422, response.text
    assert field in {error["field"] for error in response.json()["errors"]}
    assert _backend_objects(storage, schema_tenant) == before


async def test_a_call_without_an_idempotency_key_is_400(
    backend_client: httpx.AsyncClient, platform: PlatformKey, schema_tenant: Payload
) -> None:
    tenant_id = schema_tenant["tenantId"]
    headers = platform.headers(tenant_id)
    del headers["Idempotency-Key"]
    response = await _teardown(backend_client, platform, schema_tenant, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "missing_idempotency_key"


async def test_teardown_waits_for_the_migration_lock(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage
) -> None:
    """A teardown takes the lock migrations take, so it never runs beside one: while a
    migration holds it the teardown answers busy (retryable) and drops nothing."""
    schema = schema_tenant["schema"]
    settings = platform.settings(storage.service_url(), lock_timeout=0.3)
    async with app_client(settings) as client:
        await _migrate(client, platform, schema_tenant)
        before = _backend_objects(storage, schema_tenant)
        holder = psycopg.connect(storage.url(storage.database), autocommit=True)
        try:
            holder.execute(
                "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                (SchemaHistory("backend-service").lock_key(schema),),
            )
            busy = await _teardown(client, platform, schema_tenant)
        finally:
            holder.close()
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "migration_busy"
        assert _backend_objects(storage, schema_tenant) == before

        done = await _teardown(client, platform, schema_tenant)
    assert done.status_code == 200, done.text
    assert _backend_objects(storage, schema_tenant) == set()


async def test_an_object_of_another_role_depending_on_the_services_is_not_dropped(
    backend_client: httpx.AsyncClient,
    platform: PlatformKey,
    schema_tenant: Payload,
    storage: Storage,
    admin: psycopg.Connection[Any],
) -> None:
    """No CASCADE into what others own: the teardown refuses (409) and drops nothing."""
    schema = schema_tenant["schema"]
    await _migrate(backend_client, platform, schema_tenant)
    before = _backend_objects(storage, schema_tenant)
    admin.execute(
        sql.SQL("CREATE VIEW {} AS SELECT id FROM {}").format(
            sql.Identifier(schema, "account_ids"), sql.Identifier(schema, "accounts")
        )
    )

    response = await _teardown(backend_client, platform, schema_tenant)

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "teardown_blocked"
    assert _backend_objects(storage, schema_tenant) == before
    assert "account_ids" in tables_in(storage.superuser_url, storage.database, schema)


_EVERY_KIND = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN positive AS INT CHECK (VALUE > 0);
CREATE TYPE pair AS (a INT, b INT);
CREATE TYPE span AS RANGE (subtype = INT);
CREATE SEQUENCE ticket_numbers;
CREATE TABLE tickets (
    id INT PRIMARY KEY DEFAULT nextval('ticket_numbers'), mood mood, weight positive
);
CREATE FUNCTION add_pair(p pair) RETURNS INT LANGUAGE sql AS 'SELECT p.a + p.b';
CREATE FUNCTION add_pair(a INT, b INT) RETURNS INT LANGUAGE sql AS 'SELECT a + b';
CREATE PROCEDURE noop() LANGUAGE sql AS 'SELECT 1';
CREATE VIEW calm_tickets AS SELECT id FROM tickets WHERE mood = 'calm';
CREATE MATERIALIZED VIEW ticket_count AS SELECT count(*) FROM tickets;
"""


async def test_every_kind_of_object_a_migration_makes_is_dropped(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage, tmp_path: Path
) -> None:
    """Views over tables over types and sequences, overloaded routines: each kind
    is dropped after what depends on it, and nothing of the role's is left."""
    migrations = tmp_path / "kinds"
    migrations.mkdir()
    (migrations / "kinds_0001_every_kind.sql").write_text(_EVERY_KIND)
    settings = platform.settings(storage.service_url(), migrations_dir=migrations)
    async with app_client(settings) as client:
        await _migrate(client, platform, schema_tenant)
        response = await _teardown(client, platform, schema_tenant)

    assert response.status_code == 200, response.text
    assert response.json()["dropped"] == sorted(
        [
            *("add_pair", "add_pair", "noop"),
            *("calm_tickets", "ticket_count", "tickets", "ticket_numbers"),
            *("mood", "positive", "pair", "span"),
            BACKEND_HISTORY,
        ]
    )
    assert _backend_objects(storage, schema_tenant) == set()
    with psycopg.connect(storage.url(storage.database)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = %s::regnamespace",
            (schema_tenant["schema"],),
        ).fetchone()
    assert row == (0,)


async def test_an_object_it_cannot_drop_fails_the_teardown_and_drops_nothing(
    platform: PlatformKey, schema_tenant: Payload, storage: Storage, tmp_path: Path
) -> None:
    """An operator is not among the kinds it drops: the check that nothing of its own is left
    finds it, and the whole teardown is rolled back."""
    migrations = tmp_path / "operator"
    migrations.mkdir()
    (migrations / "op_0001_operator.sql").write_text(
        "CREATE TABLE things (id INT);\n"
        "CREATE OPERATOR === (LEFTARG = INT, RIGHTARG = INT, FUNCTION = int4eq);\n"
    )
    settings = platform.settings(storage.service_url(), migrations_dir=migrations)
    async with app_client(settings) as client:
        await _migrate(client, platform, schema_tenant)
        response = await _teardown(client, platform, schema_tenant)

    assert response.status_code == 500, response.text
    assert response.json()["code"] == "teardown_failed"
    assert "===" in response.json()["detail"]
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == {
        "things",
        BACKEND_HISTORY,
    }
