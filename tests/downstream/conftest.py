"""Fixtures for the reference downstream service: platform keys, tenant storage, in-process apps.

Every test gets its own tenant id (`ds_` + random hex), so its schema or database cannot clash
with another test's, and drops what it created.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.downstream.helpers import (
    Payload,
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


@pytest.fixture
def admin(pg_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """Superuser connection to the storage database, in autocommit."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema_tenant(tenant_id: str, admin: psycopg.Connection[Any]) -> Iterator[Payload]:
    """A tenant whose schema the platform has created; yields its request body."""
    schema = sql.Identifier(f"tenant_{tenant_id}")
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    yield schema_payload(tenant_id)
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))


@pytest.fixture
def database_tenant(tenant_id: str, admin: psycopg.Connection[Any]) -> Iterator[Payload]:
    """A tenant whose database the platform has created; yields its request body."""
    database = sql.Identifier(f"tenant_{tenant_id}")
    admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
    yield database_payload(tenant_id)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


@pytest.fixture
async def backend_client(
    pg_server_url: str, platform: PlatformKey
) -> AsyncIterator[httpx.AsyncClient]:
    """In-process `backend-service` connected to the test PostgreSQL, trusting `platform`."""
    async with app_client(platform.settings(pg_server_url)) as client:
        yield client


@pytest.fixture
async def auth_client(
    pg_server_url: str, platform: PlatformKey
) -> AsyncIterator[httpx.AsyncClient]:
    """In-process `auth-service`, trusting `platform`."""
    async with app_client(platform.settings(pg_server_url, service_name="auth-service")) as client:
        yield client
