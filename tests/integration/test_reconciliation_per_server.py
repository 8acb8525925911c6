"""The reconciler over a fleet of storage servers, for real: each tenant's storage is looked for
on the server its row names, storage left on another server is an orphan of that server, and a
server that cannot be reached is reported as such, its tenants never as "storage missing".

Two extra embedded servers (`fleet_stage`), `pg-b` behind a TCP proxy the test stops; a metadata
database of the test's own. The servers are shared with other tests (their tenants' storage is
orphan storage here), so the assertions look at this test's tenant ids only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

from tenancy.settings import Settings
from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from tests.support.storage_fleet import FleetStage, platform_url
from tests.support.tcp_proxy import ThreadedTcpProxy, through

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
REPO = Path(__file__).resolve().parents[2]
PATH = "/api/admin/reconciliation"


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[tuple[str, str], ...]]:
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(ScriptedService(version="auth-1").app()) as auth_url,
    ):
        yield (("backend-service", backend_url), ("auth-service", auth_url))


def execute(url: str, statement: sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def schema(tenant_id: str) -> sql.Identifier:
    return sql.Identifier(f"tenant_{tenant_id}")


def ours(report: dict[str, Any], prefix: str) -> set[tuple[str, str, str | None]]:
    """(kind, tenant, server) of the drift about this test's tenants."""
    return {
        (d["kind"], d["tenantId"], d.get("server"))
        for d in report["drift"]
        if (d["tenantId"] or "").startswith(prefix)
    }


async def reconcile(api: httpx.AsyncClient) -> dict[str, Any]:
    answer = await api.get(PATH)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def active(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda t: t["status"] == "ACTIVE", timeout=60)


async def test_storage_is_inventoried_on_each_tenants_server_and_a_down_server_is_reported(
    fleet_stage: FleetStage,
    services: tuple[tuple[str, str], ...],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    superuser_a, superuser_b = fleet_stage.extra
    on_a = platform_url(superuser_a)
    # The platform's and the test's own connections to pg-b, straight to the server.
    direct_b = platform_url(superuser_b)
    proxy = ThreadedTcpProxy(free_port(), "127.0.0.1", urlsplit(superuser_b).port or 5432)
    proxy.start()
    try:
        server_b = fleet_stage.server("pg-b", 2, "dedicated", 100)
        server_b["url"] = through(server_b["url"], proxy.port)
        settings: Settings = fleet_stage.settings(
            services,
            [fleet_stage.server("pg-a", 1, "shared", 100), server_b],
            {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"},
        )
        prefix = f"rs{uuid.uuid4().hex[:6]}_"
        basic, premium = f"{prefix}basic", f"{prefix}premium"
        async with api_client(settings, keys_dir, temporal=temporal_client) as api:
            for tenant_id, tier in ((basic, "BASIC"), (premium, "PREMIUM")):
                created = await api.post(
                    "/api/tenants",
                    json={
                        "id": tenant_id,
                        "name": tenant_id,
                        "storageMode": "SCHEMA",
                        "slaTier": tier,
                    },
                )
                assert created.status_code == 202, created.text
            for tenant_id, server in ((basic, "pg-a"), (premium, "pg-b")):
                assert (await active(api, tenant_id))["storageServer"] == server

            clean = await eventually(
                lambda: reconcile(api), lambda r: not ours(r, prefix), timeout=30
            )
            assert clean["unreachableServers"] == []

            # The basic tenant's schema lost on its server, and a leftover of the premium
            # tenant's on pg-a (its row places it on pg-b).
            execute(on_a, sql.SQL("DROP SCHEMA {} CASCADE").format(schema(basic)))
            execute(on_a, sql.SQL("CREATE SCHEMA {}").format(schema(premium)))
            # On pg-b: the premium tenant's own schema dropped, a leftover of the basic one.
            execute(direct_b, sql.SQL("DROP SCHEMA {} CASCADE").format(schema(premium)))
            execute(direct_b, sql.SQL("CREATE SCHEMA {}").format(schema(basic)))
            proxy.stop()

            down = await reconcile(api)
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "TEMPORAL_"))
            }
            env |= {
                "PLATFORM_DATABASE_URL": settings.require_database_url(),
                "PLATFORM_STORAGE_SERVERS": json.dumps(
                    [s.model_dump(mode="json", by_alias=True) for s in settings.storage_servers]
                ),
                "PLATFORM_PLACEMENT": json.dumps(settings.placement),
                "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
                "PLATFORM_TASK_QUEUE": settings.task_queue,
            }
            command = subprocess.run(
                [sys.executable, "-m", "reconciliation", "--prefix", prefix],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

            proxy.start()
            back = await reconcile(api)

        assert ours(down, prefix) == {
            ("STORAGE_MISSING", basic, "pg-a"),
            ("ORPHAN_STORAGE", premium, "pg-a"),
        }
        [unreachable] = down["unreachableServers"]
        assert unreachable["server"] == "pg-b"
        assert unreachable["error"]
        orphan = next(d for d in down["drift"] if d["tenantId"] == premium)
        assert orphan["detail"] == (
            f"schema tenant_{premium} on server pg-a is not its tenant's storage: "
            "the tenant is on server pg-b (left in place)"
        )
        assert command.returncode == 2, command.stdout + command.stderr
        [line] = [x for x in command.stdout.splitlines() if "SERVER_UNREACHABLE" in x]
        assert "pg-b" in line
        assert ours(back, prefix) == {
            ("STORAGE_MISSING", basic, "pg-a"),
            ("ORPHAN_STORAGE", premium, "pg-a"),
            ("STORAGE_MISSING", premium, "pg-b"),
            ("ORPHAN_STORAGE", basic, "pg-b"),
        }
        assert back["unreachableServers"] == []
    finally:
        proxy.close()
