"""Session-wide real infrastructure: one PostgreSQL server, one Temporal dev server and, for
the lifecycle-event tests, one NATS server with JetStream.

They are embedded (started from the wheels) unless the environment names existing ones:
`PLATFORM_DATABASE_URL` for PostgreSQL (a superuser URL), `TEMPORAL_ADDRESS` for Temporal and
`PLATFORM_EVENTS_URL` for NATS.
Each test then gets its own task queue and tenant ids, so tests never see each other's work.

The session server gets the deployment's roles (devstack.roles): the `platform` role owning the
metadata and storage databases, and `backend_service`/`auth_service`, each with a database of
its own. `make_settings` connects the platform as `platform`; services named
`backend-service`/`auth-service` get their `db_role`, so every provisioning grants its storage to
those roles. The `platform_db_url` and `storage_db_url` fixtures stay superuser URLs, for tests
to inspect and to stage faults.
"""

from __future__ import annotations

import os
import secrets
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

from devstack.nats import EmbeddedNats
from devstack.postgres import EmbeddedPostgres
from devstack.roles import Layout, Login, apply_layout, login_url, service_role
from devstack.temporal import cli_path
from infra.db.repository import TenantRepository
from infra.db.schema import apply_platform_migrations
from infra.db.servers import ServerRepository
from infra.security.keys import generate_private_key
from infra.temporal import ensure_search_attributes
from tenancy.settings import DownstreamService, Settings
from tests.support.servers import free_port
from worker import build_worker, worker_activities

# Fixtures of modules of their own: the continue-as-new tests' short-history server, and the
# downstream services of the integration and browser tests; the browser tests' summary line;
# how `make test` shares the suite among xdist workers.
pytest_plugins = [
    "tests.support.short_history",
    "tests.support.downstream_services",
    "tests.support.containers",
    "tests.support.browser_summary",
    "tests.support.parallel",
    "tests.support.storage_fleet",
    "tests.support.environment",
]

# The reference services' names; each has a role of the same name in snake case.
REFERENCE_SERVICES = ("backend-service", "auth-service")
PLATFORM_ROLE = "platform"


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


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real NATS server with JetStream (started only by the tests that ask)."""
    external = os.environ.get("PLATFORM_EVENTS_URL")
    if external:
        yield external
        return
    with EmbeddedNats(Path(tmp_path_factory.mktemp("nats")), free_port()) as server:
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


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture(scope="session")
def database_roles(pg_server_url: str, platform_db_url: str, storage_db_url: str) -> Layout:
    """The deployment's roles on the session server, as `make dev` and compose make them.

    Passwords are fresh per session (the embedded server trusts loopback, so they are not
    checked there; an external server checks them)."""
    layout = Layout(
        metadata_database=_database_name(platform_db_url),
        storage_database=_database_name(storage_db_url),
        platform=Login(PLATFORM_ROLE, secrets.token_hex(16)),
        services=tuple(
            Login(service_role(name), secrets.token_hex(16)) for name in REFERENCE_SERVICES
        ),
    )
    apply_layout(pg_server_url, layout)
    return layout


@pytest.fixture(scope="session")
def service_database_urls(pg_server_url: str, database_roles: Layout) -> dict[str, str]:
    """Each reference service's `DOWNSTREAM_DATABASE_URL`: its own role, its own database."""
    return {
        name: login_url(pg_server_url, login, login.role)
        for name, login in zip(REFERENCE_SERVICES, database_roles.services, strict=True)
    }


@pytest.fixture(scope="session")
def platform_role_urls(pg_server_url: str, database_roles: Layout) -> tuple[str, str]:
    """The metadata and storage database URLs as the platform's own (non-superuser) role."""
    assert database_roles.platform is not None
    return (
        login_url(pg_server_url, database_roles.platform, database_roles.metadata_database),
        login_url(pg_server_url, database_roles.platform, database_roles.storage_database),
    )


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
    platform_role_urls: tuple[str, str],
    temporal_client: Client,
    keys_dir: Path,
) -> Callable[..., Settings]:
    """Settings for one test: its own task queue, fast retries, and the given overrides.

    The platform connects as its own role (not the superuser), as deployed. A reference
    service's name brings its `db_role` unless the test names another storage server (where
    the session's roles do not exist)."""
    platform_db_url, storage_db_url = platform_role_urls
    task_queue = f"test-{uuid.uuid4().hex[:12]}"
    roles = {service_role(name) for name in REFERENCE_SERVICES}

    def db_role(name: str, overrides: dict[str, Any]) -> str | None:
        role = service_role(name)
        return role if role in roles and "storage_database_url" not in overrides else None

    def build(*services: tuple[str, str], **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": platform_db_url,
            "storage_database_url": storage_db_url,
            "task_queue": task_queue,
            "temporal_address": temporal_client.service_client.config.target_host,
            "signing_key_file": keys_dir / "platform-signing.pem",
            "auth_public_key_file": keys_dir / "idp.pem",
            "downstream_services": tuple(
                DownstreamService(name=name, base_url=url, db_role=db_role(name, overrides))
                for name, url in services
            ),
            "migration_max_attempts": 3,
            "migration_initial_interval": timedelta(milliseconds=50),
            "migration_max_interval": timedelta(milliseconds=200),
            "migration_timeout": timedelta(seconds=5),
            # No relay unless a test asks for one (the events tests): the outbox still records.
            "events_backend": "none",
        }
        values.update(overrides)
        return Settings(**values)

    return build


@asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    """A real worker, built exactly as `python worker.py` builds it, for the test's queue."""
    async with (
        worker_activities(settings, client=client) as activities,
        build_worker(client, settings, activities),
    ):
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tenants(platform_db_url: str) -> AsyncIterator[TenantRepository]:
    """The metadata repository, for tests to read what the workflow wrote."""
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=4) as pool:
        yield TenantRepository(pool)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def servers(platform_db_url: str) -> AsyncIterator[ServerRepository]:
    """The storage servers' repository (placements), on the session's metadata database."""
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=4) as pool:
        yield ServerRepository(pool)
