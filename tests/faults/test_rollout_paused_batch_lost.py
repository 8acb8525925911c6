"""A rollout paused while a batch has calls in flight, then its worker lost: killed with
`kill -9`, or stopped by SIGTERM so that graceful shutdown cancels the batch. The batch's rows
are handed back, the resumed rollout calls every tenant, and it ends SUCCEEDED only when every
tenant succeeded: none is left RUNNING behind a finished rollout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.main import create_app
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, until
from tests.faults.downstream import Gate
from tests.integration.test_api import token_for
from tests.integration.test_rollouts import SCOPES
from tests.support.fleet import seed_fleet
from tests.support.processes import ManagedProcess, worker_process
from tests.support.rollouts import batches_done, rollout_calls, rollout_reaches, rollout_view
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANTS = 8
CONCURRENCY = 2


def _kill(worker: ManagedProcess) -> None:
    worker.kill()


def _stop(worker: ManagedProcess) -> None:
    # SIGTERM: the worker's graceful shutdown waits for the batch, then cancels it.
    worker.stop()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("loss", "fault"),
    [(_kill, "worker kill -9 under a paused batch"), (_stop, "worker SIGTERM cancels a batch")],
    ids=["kill-9", "graceful-shutdown-cancels"],
)
async def test_a_paused_batch_whose_worker_is_lost_hands_its_rows_back(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    ledger: FaultLedger,
    loss: Callable[[ManagedProcess], None],
    fault: str,
) -> None:
    service = ScriptedService(version="v2")
    gate = Gate()
    with serve(gate.wrap(service.app())) as url:
        svc = f"svc-{unique_id('p')[-8:]}"
        settings = make_settings(
            (svc, url), migration_timeout=timedelta(seconds=60), migration_max_attempts=2
        )
        ids = await seed_fleet(settings, tenants, unique_id("pk")[:20], TENANTS)
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        headers = {"Authorization": f"Bearer {token_for(keys_dir, 'kai', *SCOPES)}"}
        try:
            await worker.start()
            gate.close()
            with serve(create_app(settings)) as api_url:
                async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
                    answer = await api.post(
                        "/api/rollouts",
                        json={"selector": {"tenantIds": ids}, "concurrency": CONCURRENCY},
                    )
                    assert answer.status_code == 202, answer.text
                    rid = answer.json()["id"]
                    # The first batch claimed every tenant; two calls are held in flight.
                    await until(lambda: gate.held() == CONCURRENCY)
                    paused = await api.post(f"/api/rollouts/{rid}/pause")

                    loss(worker)
                    ledger.fault(fault)
                    lost: dict[str, Any] = await rollout_view(api, rid)
                    gate.open()
                    await worker.start()
                    # The batch's retry (after the heartbeat timeout, or at once after a
                    # cancel) finds the rollout PAUSED.
                    await batches_done(temporal_client, rid, 1, timeout=120)
                    while_paused = await rollout_view(api, rid)
                    resumed = await api.post(f"/api/rollouts/{rid}/resume")
                    done = await rollout_reaches(api, rid, "SUCCEEDED", "FAILED", timeout=120)
                    page = (
                        await api.get(f"/api/rollouts/{rid}/tenants", params={"limit": TENANTS})
                    ).json()
        finally:
            gate.open()
            worker.kill()

    statuses = {t["tenantId"]: t["status"] for t in page["items"]}
    ledger.outcome(ids, [t for t, s in statuses.items() if s == "SUCCEEDED"])
    keys: dict[str, set[str | None]] = {}
    for call in service.calls:
        if call.tenant_id in statuses:
            keys.setdefault(call.tenant_id, set()).add(call.idempotency_key)
    ledger.duplicates(sum(extra_keys(k) for k in keys.values()))

    assert paused.status_code == 202, paused.text
    assert resumed.status_code == 202, resumed.text
    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["running"] == 0, done["counts"]
    assert done["counts"]["succeeded"] == TENANTS, done["counts"]
    assert statuses == dict.fromkeys(ids, "SUCCEEDED")
    # Every tenant was called under pass 1's key (those held at the loss again, same key).
    assert set(rollout_calls(service, rid)) == set(ids)
    rows = await tenants.all_with_prefix(ids[0].rsplit("_", 1)[0])
    assert {row.last_migration_version.get(svc) for row in rows} == {"v2"}
    # While paused after the retry, nothing is RUNNING: the rows were handed back.
    assert while_paused["counts"]["running"] == 0, while_paused["counts"]
    assert while_paused["counts"]["pending"] == TENANTS, while_paused["counts"]
    if loss is _stop:
        # The cancelled batch handed its rows back itself, before the worker exited.
        assert lost["counts"]["running"] == 0, lost["counts"]
