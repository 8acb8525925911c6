"""Session-wide real infrastructure: one PostgreSQL server and one Temporal dev server.

Both are embedded (started from the wheels) unless the environment names existing ones:
`PLATFORM_DATABASE_URL` for PostgreSQL (a superuser URL) and `TEMPORAL_ADDRESS` for Temporal.
Each test then gets its own task queue and tenant ids, so tests never see each other's work.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.postgres import EmbeddedPostgres
from devstack.temporal import cli_path
from tenancy.keys import generate_private_key
from tenancy.repository import TenantRepository
from tenancy.schema import apply_platform_migrations
from tenancy.settings import DownstreamService, Settings
from tenancy.temporal import ensure_search_attributes
from tests.support.servers import free_port
from worker import build_worker, worker_activities


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def unique_id(prefix: str = "t") -> str:
    """A tenant id no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of a real PostgreSQL server (database `postgres`)."""
    external = os.environ.get("PLATFORM_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tmp_path_factory.mktemp("pg")) / "data"
    with EmbeddedPostgres(data_dir, free_port(), durable=False) as server:
        yield server.url


def _create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


@pytest.fixture(scope="session")
def platform_db_url(pg_server_url: str) -> str:
    """A fresh metadata database with the platform's migrations applied."""
    url = _create_database(pg_server_url, f"platform_{uuid.uuid4().hex[:8]}")
    apply_platform_migrations(url)
    return url


@pytest.fixture(scope="session")
def storage_db_url(pg_server_url: str) -> str:
    """A fresh database where SCHEMA-mode tenants get their schemas."""
    return _create_database(pg_server_url, f"tenants_{uuid.uuid4().hex[:8]}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_client() -> AsyncIterator[Client]:
    """A client of a real Temporal server, with the platform's search attributes."""
    address = os.environ.get("TEMPORAL_ADDRESS")
    if address:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        await ensure_search_attributes(client)
        yield client
        return
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(cli_path()),
        dev_server_log_level="error",
    )
    try:
        await ensure_search_attributes(env.client)
        yield env.client
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh keys for the session: the platform's signing key and a test identity provider's."""
    folder = Path(tmp_path_factory.mktemp("keys"))
    generate_private_key(folder / "platform-signing.pem")
    generate_private_key(folder / "idp.pem")
    return folder


@pytest.fixture
def make_settings(
    platform_db_url: str, storage_db_url: str, temporal_client: Client, keys_dir: Path
) -> Callable[..., Settings]:
    """Settings for one test: its own task queue, fast retries, and the given overrides."""
    task_queue = f"test-{uuid.uuid4().hex[:12]}"

    def build(*services: tuple[str, str], **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": platform_db_url,
            "storage_database_url": storage_db_url,
            "task_queue": task_queue,
            "temporal_address": temporal_client.service_client.config.target_host,
            "signing_key_file": keys_dir / "platform-signing.pem",
            "auth_public_key_file": keys_dir / "idp.pem",
            "downstream_services": tuple(
                DownstreamService(name=name, base_url=url) for name, url in services
            ),
            "migration_max_attempts": 3,
            "migration_initial_interval": timedelta(milliseconds=50),
            "migration_max_interval": timedelta(milliseconds=200),
            "migration_timeout": timedelta(seconds=5),
        }
        values.update(overrides)
        return Settings(**values)

    return build


@asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    """A real worker, built exactly as `python worker.py` builds it, for the test's queue."""
    async with (
        worker_activities(settings) as activities,
        build_worker(client, settings, activities),
    ):
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tenants(platform_db_url: str) -> AsyncIterator[TenantRepository]:
    """The metadata repository, for tests to read what the workflow wrote."""
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=4) as pool:
        yield TenantRepository(pool)
