"""Degraded dependencies: clear 503s while PostgreSQL or Temporal is away, and nothing lost once
they are back. (A POST does not wait for a worker: tests/integration/test_create_path.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import cli_path
from tenancy.settings import Settings
from tests.conftest import unique_id, with_database
from tests.integration.test_api import token_for
from tests.support.polling import eventually
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def body(tenant_id: str) -> dict[str, str]:
    return {"id": tenant_id, "name": "Degraded", "storageMode": "SCHEMA", "slaTier": "BASIC"}


def authorized(url: str, keys_dir: Path) -> httpx.AsyncClient:
    """A client of the API at `url` carrying an operator's token."""
    headers = {"Authorization": f"Bearer {token_for(keys_dir)}"}
    return httpx.AsyncClient(base_url=url, timeout=30, headers=headers)


async def test_readyz_and_reads_answer_503_while_postgresql_is_down(
    tmp_path: Path, make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), durable=False)
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("platform")))
        settings = make_settings(database_url=with_database(server.url, "platform"))
        with serve(create_app(settings)) as url:
            async with authorized(url, keys_dir) as api:
                assert (await api.get("/readyz")).status_code == 200
                server.stop()

                ready = await api.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["checks"]["postgresql"].startswith("unavailable")
                assert ready.json()["checks"]["temporal"] == "ok"
                read = await api.get("/api/tenants/acme")
                assert read.status_code == 503
                assert read.headers["content-type"].startswith("application/problem+json")
                assert "Traceback" not in read.text

                server.start()
                await eventually(lambda: api.get("/readyz"), lambda r: r.status_code == 200)
                assert (await api.get("/api/tenants/acme")).status_code == 404
    finally:
        server.stop()


async def test_readyz_answers_503_while_temporal_is_down(
    make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(cli_path()),
        dev_server_log_level="error",
    )
    try:
        settings = make_settings(temporal_address=env.client.service_client.config.target_host)
        with serve(create_app(settings)) as url:
            async with authorized(url, keys_dir) as api:
                assert (await api.get("/readyz")).status_code == 200
                await env.shutdown()
                ready = await eventually(
                    lambda: api.get("/readyz"), lambda r: r.status_code == 503, timeout=30
                )
                assert ready.json()["checks"]["temporal"].startswith("unavailable")
                assert ready.json()["checks"]["postgresql"] == "ok"
                created = await api.post("/api/tenants", json=body(unique_id("notemporal")))
                assert created.status_code == 503
    finally:
        await env.shutdown()
