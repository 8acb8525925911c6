"""Helpers for the downstream service tests: request bodies, storage queries, real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from examples.downstream_service.app import create_app
from examples.downstream_service.migrator import Migrator, load_migrations
from examples.downstream_service.models import parse_jdbc_url
from examples.downstream_service.pools import StoragePools
from examples.downstream_service.repository import history_table_name
from examples.downstream_service.settings import MIGRATIONS_ROOT, DownstreamSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("backend-service", "auth-service")
Payload = dict[str, Any]


def with_database(server_url: str, database: str) -> str:
    """`server_url` pointing at another database on the same server."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@dataclass(frozen=True)
class Storage:
    """The storage server as the platform sees it: superuser URL, address, SCHEMA-mode database,
    and each service's own database URL (its role, its database)."""

    superuser_url: str
    database: str
    service_urls: dict[str, str]

    @property
    def authority(self) -> str:
        """`host:port` as the platform writes it into jdbcUrl."""
        parts = urlsplit(self.superuser_url)
        return f"{parts.hostname}:{parts.port or 5432}"

    @property
    def port(self) -> int:
        """The server's port."""
        return urlsplit(self.superuser_url).port or 5432

    def url(self, database: str) -> str:
        """Superuser URL of `database` on this server."""
        return with_database(self.superuser_url, database)

    def service_url(self, service: str = "backend-service") -> str:
        """The URL `service` is configured with (DOWNSTREAM_DATABASE_URL)."""
        return self.service_urls[service]

    def role(self, service: str = "backend-service") -> str:
        """The PostgreSQL role of `service`."""
        return urlsplit(self.service_urls[service]).username or ""


def schema_payload(tenant_id: str, storage: Storage, authority: str | None = None) -> Payload:
    """A SCHEMA-mode request body, as the platform sends it."""
    return {
        "tenantId": tenant_id,
        "storageMode": "SCHEMA",
        "jdbcUrl": f"jdbc:postgresql://{authority or storage.authority}/{storage.database}"
        f"?currentSchema=tenant_{tenant_id}",
        "schema": f"tenant_{tenant_id}",
        "database": storage.database,
    }


def database_payload(tenant_id: str, storage: Storage) -> Payload:
    """A DATABASE-mode request body, as the platform sends it."""
    return {
        "tenantId": tenant_id,
        "storageMode": "DATABASE",
        "jdbcUrl": f"jdbc:postgresql://{storage.authority}/tenant_{tenant_id}",
        "schema": "public",
        "database": f"tenant_{tenant_id}",
    }


def migrate_path(tenant_id: str) -> str:
    """URL path of the migrate endpoint."""
    return f"/internal/tenants/{tenant_id}/migrate"


def teardown_path(tenant_id: str) -> str:
    """URL path of the teardown endpoint."""
    return f"/internal/tenants/{tenant_id}"


def owned_in(server_url: str, database: str, schema: str, role: str) -> set[str]:
    """Names of every relation (table, index, sequence, view, ...) and standalone type that
    `role` owns in `database`.`schema`, read from pg_catalog."""
    with psycopg.connect(with_database(server_url, database)) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_roles r ON r.oid = c.relowner WHERE n.nspname = %s AND r.rolname = %s"
            " UNION ALL"
            " SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " JOIN pg_roles r ON r.oid = t.typowner WHERE n.nspname = %s AND r.rolname = %s"
            " AND t.typtype IN ('d', 'e', 'r')",
            (schema, role, schema, role),
        ).fetchall()
    return {row[0] for row in rows}


def tables_in(server_url: str, database: str, schema: str) -> set[str]:
    """Names of the tables in `database`.`schema`."""
    with psycopg.connect(with_database(server_url, database)) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return {row[0] for row in rows}


def history(
    server_url: str, database: str, schema: str, service: str = "backend-service"
) -> list[str]:
    """Migration ids in `service`'s history table of `database`.`schema`, in order applied."""
    table = sql.Identifier(schema, history_table_name(service))
    with psycopg.connect(with_database(server_url, database)) as conn:
        rows = conn.execute(
            sql.SQL("SELECT migration_id FROM {} ORDER BY applied_at, migration_id").format(table)
        ).fetchall()
    return [row[0] for row in rows]


def rollback_all(storage: Storage, payload: Payload, service: str = "backend-service") -> list[str]:
    """Undo every migration of `service` in the tenant of `payload`, as an operator would."""
    pools = StoragePools(
        database_url=storage.service_url(service),
        application_name=service,
        connect_timeout=timedelta(seconds=5),
        max_size=1,
        max_pools=1,
        max_idle=timedelta(seconds=60),
    )
    migrator = Migrator(
        service_name=service,
        migrations=load_migrations(MIGRATIONS_ROOT / service),
        pools=pools,
        lock_timeout=timedelta(seconds=5),
    )
    try:
        return migrator.rollback(parse_jdbc_url(payload["jdbcUrl"]), payload["schema"])
    finally:
        pools.close()


@asynccontextmanager
async def app_client(
    settings: DownstreamSettings | FastAPI,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired in-process to the app (built from `settings`, or given), with its
    lifespan running."""
    app = settings if isinstance(settings, FastAPI) else create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://downstream"
        ) as client,
    ):
        yield client


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def threaded_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with a real uvicorn server on a free port; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="downstream-uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn exited during start-up"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(base_url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        return True  # stop polling; the caller reports the exit
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def subprocess_server(
    name: str, env: dict[str, str], log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python -m examples.downstream_service` as its own process; yields URL and process."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.downstream_service",
                "--name",
                name,
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base_url, process), "the service process to start", 30)
        assert process.poll() is None, log_path.read_text(errors="replace")
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
