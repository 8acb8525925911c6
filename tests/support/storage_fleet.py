"""More storage servers for the tests of placement, cordons and every step per server.

`extra_pg_servers` starts two more embedded PostgreSQL servers (once per session and xdist
worker, only for the tests that ask), each with the deployment's roles (devstack.roles) and a
storage database `tenants`, as `make dev` prepares its `pg-dedicated`.

`FleetStage.settings` builds a test's settings for a fleet: its own metadata database (a
placement counts every tenant on a server, a cordon is a server's row: a test sharing the
session's metadata database would see the others' tenants and cordons), its servers, and the
platform connecting to each as its own role.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import EmbeddedPostgres
from devstack.roles import Layout, Login, apply_layout, login_url, service_role
from infra.db.schema import apply_platform_migrations
from tenancy.settings import Settings
from tests.support.servers import free_port

STORAGE_DATABASE = "tenants"
PLATFORM_ROLE = "platform"
SERVICES = ("backend-service", "auth-service")


def storage_layout() -> Layout:
    """The roles a storage server needs: the platform's (admin of its storage) and the
    services'; no metadata database of its own (its `tenants` database stands for both)."""
    return Layout(
        metadata_database=STORAGE_DATABASE,
        storage_database=STORAGE_DATABASE,
        platform=Login(PLATFORM_ROLE, secrets.token_hex(16)),
        services=tuple(Login(service_role(name), secrets.token_hex(16)) for name in SERVICES),
    )


@pytest.fixture(scope="session")
def extra_pg_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Superuser URLs (database `postgres`) of two more PostgreSQL servers, with roles."""
    servers = [
        EmbeddedPostgres(
            Path(tmp_path_factory.mktemp(f"pg-extra-{i}")) / "data", free_port(), durable=False
        )
        for i in range(2)
    ]
    started: list[EmbeddedPostgres] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
            apply_layout(server.url, storage_layout())
        yield [server.url for server in servers]
    finally:
        for server in started:
            server.stop()


def platform_url(superuser_url: str, database: str = STORAGE_DATABASE) -> str:
    """The platform role's URL on a server (the embedded servers trust loopback)."""
    return login_url(superuser_url, Login(PLATFORM_ROLE), database)


def own_metadata_database(superuser_url: str) -> str:
    """A fresh metadata database owned by the platform's role, migrated; its platform URL."""
    name = f"fleet_platform_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(PLATFORM_ROLE)
            )
        )
    url = platform_url(superuser_url, name)
    apply_platform_migrations(url)
    return url


@dataclass
class FleetStage:
    """The session's server (`main`, a superuser URL) and the extra ones, and how to build a
    test's settings over them."""

    main: str
    extra: list[str]
    make_settings: Callable[..., Settings]
    # The session's storage database on `main` (the extra servers have `tenants`).
    storage_database: str

    @property
    def urls(self) -> list[str]:
        """Superuser URLs of every server: the session's first."""
        return [self.main, *self.extra]

    def server(self, name: str, index: int, pool: str, max_tenants: int, **more: Any) -> Any:
        """One `PLATFORM_STORAGE_SERVERS` entry on server `index` (0: the session's)."""
        database = self.storage_database if index == 0 else STORAGE_DATABASE
        return {
            "name": name,
            "url": platform_url(self.urls[index], database),
            "pool": pool,
            "maxTenants": max_tenants,
            **more,
        }

    def settings(
        self,
        services: tuple[tuple[str, str], ...],
        servers: list[dict[str, Any]],
        placement: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """A test's settings over `servers`, with a metadata database of its own."""
        return self.make_settings(
            *services,
            database_url=own_metadata_database(self.main),
            storage_servers=servers,
            placement=placement or {},
            **overrides,
        )


@pytest.fixture
def fleet_stage(
    pg_server_url: str,
    extra_pg_servers: list[str],
    database_roles: Layout,
    make_settings: Callable[..., Settings],
) -> FleetStage:
    """Three servers (the session's and two more) to build a test's fleet from."""
    return FleetStage(
        main=pg_server_url,
        extra=extra_pg_servers,
        make_settings=make_settings,
        storage_database=database_roles.storage_database,
    )
