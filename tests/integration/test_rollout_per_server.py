"""A fleet rollout over tenants on two storage servers, for real: each tenant's migrate call
names its storage on its own server (host, port and database of that server).

Provisioned through the real worker and API onto `pg-a` (BASIC) and `pg-b` (PREMIUM), two of
`fleet_stage`'s servers, with a metadata database of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from temporalio.client import Client

from tests.support.api_client import api_client
from tests.support.polling import eventually
from tests.support.rollouts import rollout_calls, rollout_reaches
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from tests.support.storage_fleet import STORAGE_DATABASE, FleetStage

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[ScriptedService, str]]:
    service = ScriptedService(version="backend-1")
    with serve(service.app()) as url:
        yield service, url


async def active(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda t: t["status"] == "ACTIVE", timeout=60)


def expected_jdbc_url(superuser_url: str, tenant_id: str, mode: str) -> str:
    port = urlsplit(superuser_url).port
    name = f"tenant_{tenant_id}"
    if mode == "SCHEMA":
        return f"jdbc:postgresql://127.0.0.1:{port}/{STORAGE_DATABASE}?currentSchema={name}"
    return f"jdbc:postgresql://127.0.0.1:{port}/{name}"


async def test_each_tenants_migrate_call_names_its_own_server(
    fleet_stage: FleetStage,
    backend: tuple[ScriptedService, str],
    temporal_client: Client,
    keys_dir: Path,
) -> None:
    service, url = backend
    superuser_a, superuser_b = fleet_stage.extra
    settings = fleet_stage.settings(
        (("backend-service", url),),
        [
            fleet_stage.server("pg-a", 1, "shared", 100),
            fleet_stage.server("pg-b", 2, "dedicated", 100),
        ],
        {"BASIC": "shared", "STANDARD": "shared", "PREMIUM": "dedicated"},
    )
    prefix = f"rps{uuid.uuid4().hex[:6]}"
    fleet = {
        f"{prefix}_a_schema": ("BASIC", "SCHEMA", "pg-a", superuser_a),
        f"{prefix}_a_database": ("BASIC", "DATABASE", "pg-a", superuser_a),
        f"{prefix}_b_schema": ("PREMIUM", "SCHEMA", "pg-b", superuser_b),
        f"{prefix}_b_database": ("PREMIUM", "DATABASE", "pg-b", superuser_b),
    }
    async with api_client(settings, keys_dir, temporal=temporal_client) as api:
        for tenant_id, (tier, mode, _, _) in fleet.items():
            created = await api.post(
                "/api/tenants",
                json={"id": tenant_id, "name": tenant_id, "storageMode": mode, "slaTier": tier},
            )
            assert created.status_code == 202, created.text
        placed = {tenant_id: (await active(api, tenant_id))["storageServer"] for tenant_id in fleet}
        service.version = "backend-2"
        started = await api.post(
            "/api/rollouts", json={"selector": {"tenantIds": list(fleet)}, "concurrency": 4}
        )
        assert started.status_code == 202, started.text
        rollout_id = started.json()["id"]
        done = await rollout_reaches(api, rollout_id, "SUCCEEDED", "FAILED")

    assert placed == {tenant_id: server for tenant_id, (_, _, server, _) in fleet.items()}
    assert done["status"] == "SUCCEEDED", done
    assert sorted(rollout_calls(service, rollout_id)) == sorted(fleet)
    prefix_of_call = f"rollout-{rollout_id}/"
    sent = {
        call.tenant_id: call.body["jdbcUrl"]
        for call in service.calls
        if (call.idempotency_key or "").startswith(prefix_of_call)
    }
    assert sent == {
        tenant_id: expected_jdbc_url(superuser, tenant_id, mode)
        for tenant_id, (_, mode, _, superuser) in fleet.items()
    }
