"""Fleet rollouts through the API against real PostgreSQL, Temporal and HTTP services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE, WRITE_SCOPE
from infra.db.repository import TenantRepository
from tenancy.models import EventAction
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import api_stack, body, token_for, wait_status
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SCOPES = (WRITE_SCOPE, READ_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)


async def provision(api: httpx.AsyncClient, count: int, prefix: str) -> list[str]:
    ids = [f"{prefix}_{i:03d}" for i in range(count)]
    for tenant_id in ids:
        answer = await api.post("/api/tenants", json=body(tenant_id))
        assert answer.status_code == 202, answer.text
    for tenant_id in ids:
        await wait_status(api, tenant_id, "ACTIVE")
    return ids


async def wait_rollout(api: httpx.AsyncClient, rollout_id: str, *statuses: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"/api/rollouts/{rollout_id}")).json()  # type: ignore[no-any-return]

    return await eventually(probe, lambda r: r.get("status") in statuses, timeout=60)


async def test_a_rollout_brings_every_selected_tenant_to_the_new_version_in_waves(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v1")
    with serve(service.app()) as url:
        svc = f"svc-{unique_id('r')[-8:]}"
        settings = make_settings((svc, url))
        prefix = unique_id("ro")[:20]
        async with api_stack(
            temporal_client, settings, token_for(keys_dir, "rita", *SCOPES)
        ) as api:
            ids = await provision(api, 12, prefix)
            service.version = "v2"
            answer = await api.post(
                "/api/rollouts",
                json={
                    "selector": {"tenantIds": ids},
                    "waves": [{"name": "canary", "size": 2}, {"name": "rest"}],
                    "concurrency": 4,
                },
            )
            assert answer.status_code == 202, answer.text
            rollout = answer.json()
            assert answer.headers["Location"] == f"/api/rollouts/{rollout['id']}"
            assert rollout["services"] == [svc]
            assert rollout["counts"]["total"] == 12
            done = await wait_rollout(api, rollout["id"], "SUCCEEDED", "FAILED")
            versions = (await api.get(f"/api/services/{svc}/versions")).json()
            audit = (await api.get(f"/api/rollouts/{rollout['id']}/events")).json()["items"]
            page = (
                await api.get(f"/api/rollouts/{rollout['id']}/tenants", params={"limit": 5})
            ).json()

    assert done["status"] == "SUCCEEDED", done
    assert done["counts"] == {
        "total": 12,
        "pending": 0,
        "running": 0,
        "succeeded": 12,
        "failed": 0,
        "skipped": 0,
    }
    assert [(w["name"], w["status"], w["counts"]["total"]) for w in done["waves"]] == [
        ("canary", "SUCCEEDED", 2),
        ("rest", "SUCCEEDED", 10),
    ]
    assert versions["versions"] == {"v2": 12}
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("ROLLOUT_STARTED", "rita"),
        ("ROLLOUT_FINISHED", f"workflow:rollout-{rollout['id']}"),
    ]
    assert [t["tenantId"] for t in page["items"]] == ids[:5]
    assert page["nextCursor"] is not None
    # The canary's tenants were called before any of the rest.
    calls = [
        c.tenant_id
        for c in service.calls
        if c.tenant_id in ids and "rollout-" in (c.idempotency_key or "")
    ]
    assert set(calls[:2]) == set(ids[:2])
    events = await tenants.events(ids[0])
    assert [e.reason for e in events if e.action is EventAction.VERSION_CHANGED] == [
        f"{svc}: v1 -> v2"
    ]
