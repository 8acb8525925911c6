"""Fixtures for the reference downstream service: platform keys, tenant storage, in-process apps.

The services run as deployed: each with its own PostgreSQL role and its own database, granted
on each tenant exactly what the platform grants (CONNECT, and USAGE and CREATE on the tenant's
schema). Every test gets its own tenant id (`ds_` + random hex), so its schema or database
cannot clash with another test's, and drops what it created.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.downstream.helpers import (
    SERVICES,
    Payload,
    Storage,
    app_client,
    database_payload,
    schema_payload,
)
from tests.downstream.tokens import PlatformKey


@pytest.fixture(autouse=True)
def _no_downstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's `DOWNSTREAM_*` variables out of the settings the tests build."""
    for name in list(os.environ):
        if name.startswith("DOWNSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def platform_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the test platform's keys."""
    return Path(tmp_path_factory.mktemp("downstream-keys"))


@pytest.fixture(scope="session")
def platform(platform_keys_dir: Path) -> PlatformKey:
    """The platform's signing key: the services under test verify with its public PEM."""
    return PlatformKey.generate(platform_keys_dir, "platform")


@pytest.fixture(scope="session")
def stranger(platform_keys_dir: Path) -> PlatformKey:
    """A key the services do not trust."""
    return PlatformKey.generate(platform_keys_dir, "stranger")


@pytest.fixture
def tenant_id() -> str:
    """A tenant id no other test uses."""
    return f"ds_{secrets.token_hex(6)}"


def _grant(conn: psycopg.Connection[Any], storage: Storage, schema: str, database: str) -> None:
    """What the platform grants each service: CONNECT on the database, USAGE and CREATE on
    the tenant's schema; nothing else."""
    for service in SERVICES:
        role = sql.Identifier(storage.role(service))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role)
        )
        conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)
        )


@pytest.fixture(scope="session")
def storage(pg_server_url: str, storage_db_url: str) -> Iterator[Storage]:
    """The storage server, with a role and an own database per service, as deployed."""
    suffix = secrets.token_hex(4)
    roles = {service: f"ds_{service.split('-')[0]}_{suffix}" for service in SERVICES}
    parts = urlsplit(pg_server_url)
    urls = {
        service: urlunsplit(
            parts._replace(
                netloc=f"{role}:pw-{suffix}@{parts.hostname}:{parts.port or 5432}", path=f"/{role}"
            )
        )
        for service, role in roles.items()
    }
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        for role in roles.values():
            name = sql.Identifier(role)
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    name, sql.Literal(f"pw-{suffix}")
                )
            )
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, name))
    database = urlsplit(storage_db_url).path.lstrip("/")
    yield Storage(superuser_url=pg_server_url, database=database, service_urls=urls)
    role_list = sql.SQL(", ").join(sql.Identifier(role) for role in roles.values())
    with psycopg.connect(storage_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role_list))
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        for role in roles.values():
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(role))
            )
        admin.execute(sql.SQL("DROP OWNED BY {}").format(role_list))
        admin.execute(sql.SQL("DROP ROLE {}").format(role_list))


@pytest.fixture
def admin(storage: Storage) -> Iterator[psycopg.Connection[Any]]:
    """Superuser connection to the SCHEMA-mode storage database, in autocommit."""
    with psycopg.connect(storage.url(storage.database), autocommit=True) as conn:
        yield conn


def _schema_tenant(
    tenant_id: str, storage: Storage, admin: psycopg.Connection[Any]
) -> Iterator[Payload]:
    schema = f"tenant_{tenant_id}"
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    _grant(admin, storage, schema, storage.database)
    yield schema_payload(tenant_id, storage)
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def schema_tenant(
    tenant_id: str, storage: Storage, admin: psycopg.Connection[Any]
) -> Iterator[Payload]:
    """A tenant whose schema the platform has created and granted; yields its request body."""
    yield from _schema_tenant(tenant_id, storage, admin)


@pytest.fixture
def neighbour_tenant(storage: Storage, admin: psycopg.Connection[Any]) -> Iterator[Payload]:
    """A second SCHEMA-mode tenant in the same database as `schema_tenant`."""
    yield from _schema_tenant(f"ds_{secrets.token_hex(6)}", storage, admin)


@pytest.fixture
def database_tenant(tenant_id: str, storage: Storage) -> Iterator[Payload]:
    """A tenant whose database the platform has created and granted; yields its request body."""
    database = f"tenant_{tenant_id}"
    with psycopg.connect(storage.superuser_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(storage.url(database), autocommit=True) as conn:
        _grant(conn, storage, "public", database)
    yield database_payload(tenant_id, storage)
    with psycopg.connect(storage.superuser_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


@pytest.fixture
async def backend_client(
    storage: Storage, platform: PlatformKey
) -> AsyncIterator[httpx.AsyncClient]:
    """In-process `backend-service` with its own role and database, trusting `platform`."""
    async with app_client(platform.settings(storage.service_url())) as client:
        yield client


@pytest.fixture
async def auth_client(storage: Storage, platform: PlatformKey) -> AsyncIterator[httpx.AsyncClient]:
    """In-process `auth-service` with its own role and database, trusting `platform`."""
    settings = platform.settings(storage.service_url("auth-service"), service_name="auth-service")
    async with app_client(settings) as client:
        yield client
