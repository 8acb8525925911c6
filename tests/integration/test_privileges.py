"""Least privilege on the real PostgreSQL: the platform's role creates tenant storage and grants
it to each service's role, and a service role reaches its tenants' storage and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors, sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from api.gateway import WorkflowGateway
from devstack.roles import Layout, apply_layout
from infra.db.repository import TenantRepository
from infra.db.storage import StorageAdmin
from tenancy.models import StorageLocation, StorageMode, TenantSpec
from tenancy.naming import storage_location
from tenancy.settings import DownstreamService, Settings
from tenancy.status import TenantStatus
from tests.conftest import PLATFORM_ROLE, running_worker, unique_id, with_database
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BACKEND, AUTH = "backend_service", "auth_service"
MODES = [StorageMode.SCHEMA, StorageMode.DATABASE]
MakeAdmin = Callable[..., Awaitable[StorageAdmin]]


@pytest_asyncio.fixture(loop_scope="session")
async def make_admin(platform_role_urls: tuple[str, str]) -> AsyncIterator[MakeAdmin]:
    """StorageAdmins connected as the platform's own role (not a superuser), as deployed."""
    storage_url = platform_role_urls[1]
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        storage_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )

    async def make(*roles: str) -> StorageAdmin:
        return StorageAdmin(pool, storage_url, roles)

    async with pool:
        yield make


@pytest.fixture
def role_url(service_database_urls: dict[str, str]) -> Callable[[str, str], str]:
    """A URL of `database` with a service role's own credentials."""
    by_role = {
        "backend_service": service_database_urls["backend-service"],
        "auth_service": service_database_urls["auth-service"],
    }
    return lambda role, database: with_database(by_role[role], database)


@contextmanager
def as_role(
    role_url: Callable[[str, str], str], role: str, location: StorageLocation
) -> Iterator[psycopg.Connection[Any]]:
    """A connection as `role` to the tenant's storage, its schema first on the search path."""
    with psycopg.connect(role_url(role, location.database), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema_name)))
        yield conn


def create_table(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(name)))


@pytest.mark.parametrize("mode", MODES)
async def test_a_service_role_creates_and_uses_tables_in_its_tenants_storage(
    make_admin: MakeAdmin, role_url: Callable[[str, str], str], mode: StorageMode
) -> None:
    admin = await make_admin(BACKEND, AUTH)
    location = await admin.ensure(unique_id("priv"), mode)

    with as_role(role_url, BACKEND, location) as conn:
        create_table(conn, "accounts")
        conn.execute("INSERT INTO accounts VALUES (1)")
        assert conn.execute("SELECT id FROM accounts").fetchall() == [(1,)]
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'accounts'",
            (location.schema_name,),
        ).fetchone()
    assert owner == (BACKEND,)


@pytest.mark.parametrize("mode", MODES)
async def test_storage_is_owned_by_the_platform_role(
    make_admin: MakeAdmin, pg_server_url: str, mode: StorageMode
) -> None:
    admin = await make_admin(BACKEND)
    location = await admin.ensure(unique_id("priv"), mode)

    query = (
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s"
        if mode is StorageMode.SCHEMA
        else "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
    )
    name = location.schema_name if mode is StorageMode.SCHEMA else location.database
    with psycopg.connect(with_database(pg_server_url, location.database)) as conn:
        assert conn.execute(query, (name,)).fetchone() == (PLATFORM_ROLE,)


@pytest.mark.parametrize("mode", MODES)
async def test_a_service_role_cannot_create_in_storage_not_granted_to_it(
    make_admin: MakeAdmin, role_url: Callable[[str, str], str], mode: StorageMode
) -> None:
    granted = await (await make_admin(BACKEND)).ensure(unique_id("priv"), mode)
    other = await (await make_admin(AUTH)).ensure(unique_id("priv"), mode)

    if mode is StorageMode.SCHEMA:
        with (
            as_role(role_url, BACKEND, other) as conn,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            # Qualified: without USAGE the search path skips the schema altogether.
            conn.execute(
                sql.SQL("CREATE TABLE {}.intruder (id int)").format(
                    sql.Identifier(other.schema_name)
                )
            )
    else:
        # PUBLIC's CONNECT is revoked: a role without the grant is refused at the door.
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(role_url(BACKEND, other.database)).close()
    with as_role(role_url, BACKEND, granted) as conn:
        create_table(conn, "mine")


@pytest.mark.parametrize("mode", MODES)
async def test_one_service_role_cannot_read_or_alter_another_services_table(
    make_admin: MakeAdmin, role_url: Callable[[str, str], str], mode: StorageMode
) -> None:
    admin = await make_admin(BACKEND, AUTH)
    location = await admin.ensure(unique_id("priv"), mode)
    with as_role(role_url, BACKEND, location) as conn:
        create_table(conn, "accounts")
        conn.execute("INSERT INTO accounts VALUES (1)")

    with as_role(role_url, AUTH, location) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM accounts")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE accounts")
        # Its own tables next to them are fine.
        create_table(conn, "users")


@pytest.mark.parametrize("role", [BACKEND, AUTH])
async def test_a_service_role_cannot_reach_the_platform_metadata(
    role_url: Callable[[str, str], str], database_roles: Layout, role: str
) -> None:
    metadata = database_roles.metadata_database
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(role_url(role, metadata)).close()


async def test_a_service_role_cannot_create_in_the_shared_public_schema(
    role_url: Callable[[str, str], str], database_roles: Layout
) -> None:
    with (
        psycopg.connect(role_url(BACKEND, database_roles.storage_database)) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE public.squatter (id int)")


@pytest.mark.parametrize("mode", MODES)
async def test_ensuring_twice_and_concurrently_changes_nothing(
    make_admin: MakeAdmin, role_url: Callable[[str, str], str], mode: StorageMode
) -> None:
    admin = await make_admin(BACKEND, AUTH)
    tenant_id = unique_id("priv")
    first = await admin.ensure(tenant_id, mode)
    with as_role(role_url, BACKEND, first) as conn:
        create_table(conn, "accounts")
        conn.execute("INSERT INTO accounts VALUES (7)")

    again = await asyncio.gather(*(admin.ensure(tenant_id, mode) for _ in range(3)))

    assert again == [first] * 3
    with as_role(role_url, BACKEND, first) as conn:
        assert conn.execute("SELECT id FROM accounts").fetchall() == [(7,)]
    with as_role(role_url, AUTH, first) as conn:
        create_table(conn, "users")


@pytest.mark.parametrize("mode", MODES)
async def test_a_missing_role_is_a_permanent_error_and_creates_nothing(
    make_admin: MakeAdmin, mode: StorageMode
) -> None:
    admin = await make_admin(BACKEND, "no_such_service")
    tenant_id = unique_id("priv")

    with pytest.raises(errors.UndefinedObject) as caught:
        await admin.ensure(tenant_id, mode)

    assert caught.value.sqlstate == "42704"
    assert caught.value.diag.sqlstate == "42704"
    assert not await admin.exists(admin.locate(tenant_id, mode))


async def test_the_deployment_layout_applies_twice_and_adopts_a_superuser_run_metadata_database(
    pg_server_url: str, database_roles: Layout
) -> None:
    metadata, storage = unique_id("meta"), unique_id("store")
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(metadata)))
    # As a deployment that ran the platform as the superuser left it.
    with psycopg.connect(with_database(pg_server_url, metadata), autocommit=True) as conn:
        conn.execute("CREATE TABLE tenants (id text PRIMARY KEY)")
    layout = Layout(metadata, storage, database_roles.platform, database_roles.services)

    apply_layout(pg_server_url, layout)
    apply_layout(pg_server_url, layout)

    with psycopg.connect(pg_server_url) as conn:
        owners = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
            ([metadata, storage, BACKEND, AUTH],),
        ).fetchall()
        connect = conn.execute(
            "SELECT r, d, has_database_privilege(r, d, 'CONNECT') "
            "FROM unnest(%s::text[]) AS r, unnest(%s::text[]) AS d ORDER BY r, d",
            ([BACKEND, AUTH], [metadata, storage, BACKEND, AUTH]),
        ).fetchall()
    assert dict(owners) == {
        metadata: PLATFORM_ROLE,
        storage: PLATFORM_ROLE,
        BACKEND: BACKEND,
        AUTH: AUTH,
    }
    assert {(r, d) for r, d, allowed in connect if allowed} == {
        (AUTH, storage),
        (AUTH, AUTH),
        (BACKEND, storage),
        (BACKEND, BACKEND),
    }
    with psycopg.connect(with_database(pg_server_url, metadata)) as conn:
        table = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'tenants'")
        assert table.fetchall() == [(PLATFORM_ROLE,)]


def tenant_spec(mode: StorageMode) -> TenantSpec:
    return TenantSpec(id=unique_id("priv"), name="Priv", storage_mode=mode, sla_tier="BASIC")


@pytest.mark.parametrize("mode", MODES)
async def test_the_worker_grants_new_storage_to_the_configured_roles(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    role_url: Callable[[str, str], str],
    mode: StorageMode,
) -> None:
    service = ScriptedService()
    request = tenant_spec(mode)
    with serve(service.app()) as url:
        settings = make_settings(("backend-service", url))
        assert settings.service_db_roles() == (BACKEND,)
        async with running_worker(temporal_client, settings):
            await WorkflowGateway(temporal_client, settings).provision(request)
            await eventually(
                lambda: tenants.get(request.id),
                lambda t: t is not None and t.status is TenantStatus.ACTIVE,
            )

    location = storage_location(settings.require_storage_database_url(), mode, request.id)
    with as_role(role_url, BACKEND, location) as conn:
        create_table(conn, "accounts")


async def test_a_db_role_missing_on_the_server_ends_in_provision_error_with_the_reason(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
) -> None:
    service = ScriptedService()
    request = tenant_spec(StorageMode.SCHEMA)
    with serve(service.app()) as url:
        ghost = DownstreamService(name="ghost-service", base_url=url, db_role="ghost_service")
        settings = make_settings(downstream_services=(ghost,))
        async with running_worker(temporal_client, settings):
            await WorkflowGateway(temporal_client, settings).provision(request)
            tenant = await eventually(
                lambda: tenants.get(request.id),
                lambda t: t is not None and t.status is TenantStatus.PROVISION_ERROR,
            )

    assert tenant is not None
    assert tenant.status_reason is not None
    assert "ghost_service" in tenant.status_reason
    assert tenant.jdbc_url is None
    assert service.calls_for(request.id) == []


async def test_the_platform_role_may_set_each_service_role_and_inherits_nothing_of_it(
    pg_server_url: str, database_roles: Layout
) -> None:
    with psycopg.connect(pg_server_url) as conn:
        memberships = conn.execute(
            "SELECT r.rolname, m.admin_option, m.inherit_option, m.set_option "
            "FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "WHERE m.member = %s::regrole AND r.rolname = ANY(%s)",
            (PLATFORM_ROLE, [BACKEND, AUTH]),
        ).fetchall()
        privileges = conn.execute(
            "SELECT r, pg_has_role(%s, r, 'SET'), pg_has_role(%s, r, 'USAGE') "
            "FROM unnest(%s::text[]) AS r ORDER BY r",
            (PLATFORM_ROLE, PLATFORM_ROLE, [BACKEND, AUTH]),
        ).fetchall()

    # Restoring a service's objects as their owner (a move) needs SET; nothing more.
    assert sorted(memberships) == [(AUTH, False, False, True), (BACKEND, False, False, True)]
    assert privileges == [(AUTH, True, False), (BACKEND, True, False)]
