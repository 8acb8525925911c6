"""Deleting a tenant that lives on a second storage server, for real: the backup is dumped from
that server, the storage is dropped there, and nothing of the tenant was ever on the others.

Three embedded servers (`fleet_stage`): the session's (index 0, not in this fleet), `pg-a`
(index 1, pool `shared`) and `pg-b` (index 2, pool `dedicated`, where PREMIUM tenants go); a
metadata database of the test's own."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql
from temporalio.client import Client

from devstack.roles import Login, login_url, service_role
from infra.db.binaries import pg_program
from tenancy.naming import storage_name
from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage import storage_exists
from tests.support.storage_fleet import STORAGE_DATABASE, FleetStage, platform_url

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[ScriptedService, tuple[tuple[str, str], ...]]]:
    backend = ScriptedService(version="backend-1")
    with (
        serve(backend.app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield backend, (("backend-service", backend_url), ("auth-service", auth_url))


async def status_of(api: httpx.AsyncClient, tenant_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda t: t["status"] == status, timeout=60)


def write_as_backend(superuser_url: str, tenant_id: str, mode: str) -> None:
    """What the backend service would keep in the tenant's storage: a table with a row, as its
    own role (granted the storage on that server)."""
    name = storage_name(tenant_id)
    database = STORAGE_DATABASE if mode == "SCHEMA" else name
    schema = name if mode == "SCHEMA" else "public"
    url = login_url(superuser_url, Login(service_role("backend-service")), database)
    with psycopg.connect(url, autocommit=True) as conn:
        table = sql.Identifier(schema, "ledger_entries")
        conn.execute(sql.SQL("CREATE TABLE {} (id int, note text)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'kept in the backup')").format(table))


def archive_contents(path: str) -> str:
    done = subprocess.run(
        [str(pg_program("pg_restore")), "--list", path], check=True, capture_output=True
    )
    return done.stdout.decode()


@pytest.mark.parametrize("mode", ["SCHEMA", "DATABASE"])
async def test_a_tenant_on_a_second_server_is_backed_up_and_dropped_there(
    mode: str,
    fleet_stage: FleetStage,
    services: tuple[ScriptedService, tuple[tuple[str, str], ...]],
    temporal_client: Client,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    backend, urls = services
    superuser_a, superuser_b = fleet_stage.extra
    settings = fleet_stage.settings(
        urls,
        [
            fleet_stage.server("pg-a", 1, "shared", 100),
            fleet_stage.server("pg-b", 2, "dedicated", 100),
        ],
        {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"},
        deletion_backup_dir=tmp_path / "backups",
    )
    tenant_id = f"dps{uuid.uuid4().hex[:8]}"
    elsewhere = [
        platform_url(fleet_stage.main, fleet_stage.storage_database),
        platform_url(superuser_a),
    ]
    on_b = platform_url(superuser_b)
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        created = await api.post(
            "/api/tenants",
            json={
                "id": tenant_id,
                "name": "Second Server",
                "storageMode": mode,
                "slaTier": "PREMIUM",
            },
        )
        assert created.status_code == 202, created.text
        active = await status_of(api, tenant_id, "ACTIVE")
        assert storage_exists(on_b, tenant_id, mode)
        write_as_backend(superuser_b, tenant_id, mode)

        answer = await api.delete(
            f"/api/tenants/{tenant_id}", params={"graceSeconds": 0, "reason": "moved away"}
        )
        assert answer.status_code == 202, answer.text
        deleted = await status_of(api, tenant_id, "DELETED")

    assert active["storageServer"] == "pg-b"
    assert f":{urlsplit(superuser_b).port}/" in active["jdbcUrl"]
    assert deleted["storageServer"] == "pg-b"
    assert not storage_exists(on_b, tenant_id, mode)
    assert [url for url in elsewhere if storage_exists(url, tenant_id, mode)] == []
    backup = deleted["deletion"]["backup"]
    assert backup is not None
    contents = archive_contents(backup["path"])
    assert "TABLE DATA" in contents
    assert "ledger_entries" in contents
    assert len(backend.teardowns_for(tenant_id)) == 1
