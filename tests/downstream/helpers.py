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
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg import sql
from yoyo import get_backend

from examples.downstream_service.app import create_app
from examples.downstream_service.settings import DownstreamSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
STORAGE_DATABASE = "postgres"
Payload = dict[str, Any]


def with_database(server_url: str, database: str) -> str:
    """`server_url` pointing at another database on the same server."""
    return server_url.rsplit("/", 1)[0] + "/" + database


def schema_payload(tenant_id: str) -> Payload:
    """A SCHEMA-mode request body, as the platform sends it."""
    return {
        "tenantId": tenant_id,
        "storageMode": "SCHEMA",
        "jdbcUrl": f"jdbc:postgresql://127.0.0.1:5432/{STORAGE_DATABASE}"
        f"?currentSchema=tenant_{tenant_id}",
        "schema": f"tenant_{tenant_id}",
        "database": STORAGE_DATABASE,
    }


def database_payload(tenant_id: str) -> Payload:
    """A DATABASE-mode request body, as the platform sends it."""
    return {
        "tenantId": tenant_id,
        "storageMode": "DATABASE",
        "jdbcUrl": f"jdbc:postgresql://127.0.0.1:5432/tenant_{tenant_id}",
        "schema": "public",
        "database": f"tenant_{tenant_id}",
    }


def migrate_path(tenant_id: str) -> str:
    """URL path of the migrate endpoint."""
    return f"/internal/tenants/{tenant_id}/migrate"


def tables_in(server_url: str, database: str, schema: str) -> set[str]:
    """Names of the tables in `database`.`schema`."""
    with psycopg.connect(with_database(server_url, database)) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return {row[0] for row in rows}


def applied_log(server_url: str, database: str, schema: str) -> list[str]:
    """Migration ids of every `apply` entry in yoyo's log, oldest first."""
    with psycopg.connect(with_database(server_url, database)) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT migration_id FROM {}._yoyo_log WHERE operation = 'apply' "
                "ORDER BY created_at_utc"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return [row[0] for row in rows]


def yoyo_backend(server_url: str, schema: str) -> Any:
    """yoyo's own backend on `schema` of the storage database, for setting up and inspecting.

    yoyo formats the schema into SQL itself; safe here because test schemas are `tenant_ds_<hex>`.
    """
    assert schema.replace("_", "").isalnum(), schema
    url = server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return get_backend(f"{url}?schema={schema}")


@asynccontextmanager
async def app_client(settings: DownstreamSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to the app in-process, with its lifespan running."""
    app = create_app(settings)
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
