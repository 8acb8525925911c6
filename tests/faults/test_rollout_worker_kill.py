"""`kill -9` of the worker while a rollout's batch has calls in flight: a new worker resumes the
rollout, every tenant succeeds once, and a repeated call carries the same idempotency key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from api.main import create_app
from infra.db.repository import TenantRepository
from tenancy.models import EventAction
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, settle, spec, until
from tests.faults.downstream import Gate
from tests.integration.test_api import token_for
from tests.integration.test_rollouts import SCOPES
from tests.support.polling import eventually
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANTS = 60
CONCURRENCY = 4


async def test_worker_killed_mid_rollout_resumes_without_losing_or_repeating_a_tenant(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    service = ScriptedService(version="v1")
    gate = Gate()
    with serve(gate.wrap(service.app())) as url:
        svc = f"svc-{unique_id('k')[-8:]}"
        # The lost batch is noticed at its heartbeat timeout: the call timeout x attempts + 30 s.
        settings = make_settings(
            (svc, url), migration_timeout=timedelta(seconds=2), migration_max_attempts=2
        )
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        prefix = unique_id("rk")[:20]
        ids = [f"{prefix}_{i:03d}" for i in range(TENANTS)]
        try:
            await worker.start()
            gateway = WorkflowGateway(temporal_client, settings)
            for tenant_id in ids:
                await gateway.provision(spec(tenant_id))
            rows = await settle(tenants, ids, timeout=120)
            assert {row.status for row in rows.values()} == {TenantStatus.ACTIVE}

            service.version = "v2"
            gate.close()
            headers = {"Authorization": f"Bearer {token_for(keys_dir, 'kim', *SCOPES)}"}
            with serve(create_app(settings)) as api_url:
                async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
                    answer = await api.post(
                        "/api/rollouts",
                        json={"selector": {"tenantIds": ids}, "concurrency": CONCURRENCY},
                    )
                    assert answer.status_code == 202, answer.text
                    rollout_id = answer.json()["id"]
                    # The first batch's calls are in flight, held before the service.
                    await until(lambda: gate.held() == CONCURRENCY)

                    worker.kill()
                    ledger.fault("worker kill -9 during a rollout batch")
                    # The held calls now reach the service with nobody left to read the answer.
                    gate.open()
                    await worker.start()

                    async def probe() -> dict[str, Any]:
                        got = await api.get(f"/api/rollouts/{rollout_id}")
                        return got.json()  # type: ignore[no-any-return]

                    done = await eventually(
                        probe, lambda r: r.get("status") in ("SUCCEEDED", "FAILED"), timeout=120
                    )
                    page = (
                        await api.get(
                            f"/api/rollouts/{rollout_id}/tenants", params={"limit": TENANTS}
                        )
                    ).json()
        finally:
            gate.open()
            worker.kill()

    rollout_calls = [c for c in service.calls if "rollout-" in (c.idempotency_key or "")]
    keys_by_tenant: dict[str, set[str | None]] = {}
    for call in rollout_calls:
        keys_by_tenant.setdefault(call.tenant_id, set()).add(call.idempotency_key)
    calls_by_tenant = Counter(call.tenant_id for call in rollout_calls)
    changes: Counter[str] = Counter()
    for tenant_id in ids:
        events = await tenants.events(tenant_id)
        changes[tenant_id] = sum(e.action is EventAction.VERSION_CHANGED for e in events)
    ledger.outcome(ids, [t["tenantId"] for t in page["items"] if t["status"] == "SUCCEEDED"])
    ledger.duplicates(sum(extra_keys(keys) for keys in keys_by_tenant.values()))

    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["succeeded"] == TENANTS, done["counts"]
    assert sorted(t["tenantId"] for t in page["items"]) == ids
    assert {t["status"] for t in page["items"]} == {"SUCCEEDED"}
    # No tenant's call lost: each was called, under one key, that of pass 1.
    assert set(keys_by_tenant) == set(ids)
    assert {
        tenant_id: keys
        for tenant_id, keys in keys_by_tenant.items()
        if keys != {f"rollout-{rollout_id}/pass-1/{tenant_id}/{svc}"}
    } == {}
    # The calls held at the kill were made again by the retried batch, with the same key.
    repeated = [tenant_id for tenant_id, n in calls_by_tenant.items() if n > 1]
    assert len(repeated) >= CONCURRENCY, calls_by_tenant
    # Each tenant's version changed once: the migration was recorded once.
    assert set(changes.values()) == {1}, changes
    rows_after = await tenants.all_with_prefix(prefix)
    assert {row.last_migration_version[svc] for row in rows_after} == {"v2"}
