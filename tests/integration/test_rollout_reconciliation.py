"""The reconciler's rollout rule against real PostgreSQL, Temporal and an HTTP service: a
rollout whose row is RUNNING while no run of it is open is reported by
`GET /api/admin/reconciliation`, and `POST` starts a run that goes on from the rows: only the
tenants still PENDING are called, and a failure of a wave the dead run finished still fails
the rollout. A run left open after its rollout ended is reported and left alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowExecutionStatus

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, WRITE_SCOPE
from api.gateway import WorkflowGateway
from api.main import create_app
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from tenancy.rollouts import (
    RolloutRequest,
    RolloutStatus,
    RolloutTenantStatus,
    Selector,
    WaveSpec,
    WaveStatus,
)
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import api_stack, token_for
from tests.integration.test_rollouts import wait_rollout
from tests.support.fleet import seed_fleet
from tests.support.polling import eventually
from tests.support.rollouts import cancel_rollouts, create_rollout, insert_active_tenants
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from workflows.rollout.contracts import rollout_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _drift_of(report: dict[str, Any], rollout_id: str) -> list[dict[str, Any]]:
    return [d for d in report.get("drift", []) if d.get("rolloutId") == rollout_id]


@pytest.mark.timeout(120)
async def test_a_rollout_without_a_run_is_reported_and_resumed_from_its_rows(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v1")
    svc = f"svc-{unique_id('rc')[-8:]}"
    with serve(service.app()) as url:
        # The rule leaves rows changed within twice this alone (a run is started after its row).
        settings = make_settings((svc, url), create_timeout=timedelta(milliseconds=250))
        ids = await seed_fleet(settings, tenants, unique_id("rcro")[:20], 5)
        service.version = "v2"
        token = token_for(keys_dir, "remy", WRITE_SCOPE, READ_SCOPE, ROLLOUTS_READ_SCOPE)
        async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool:
            rollouts = RolloutRepository(pool)
            # A run finished the canary (one tenant failed) and died before the rest.
            run = await create_rollout(
                rollouts,
                settings,
                ids,
                "rita",
                waves=[WaveSpec(name="canary", size=2), WaveSpec(name="rest")],
            )
            rollout_id = run.rollout_id
            await rollouts.claim(rollout_id, 0, 1, 2)
            await rollouts.finish_tenant(rollout_id, ids[0], RolloutTenantStatus.SUCCEEDED)
            await rollouts.finish_tenant(
                rollout_id, ids[1], RolloutTenantStatus.FAILED, svc, "HTTP 400"
            )
            await rollouts.set_wave(rollout_id, 0, WaveStatus.FAILED)
            async with api_stack(temporal_client, settings, token) as api:

                async def report() -> dict[str, Any]:
                    answer = await api.get("/api/admin/reconciliation")
                    assert answer.status_code == 200, answer.text
                    return answer.json()  # type: ignore[no-any-return]

                reported = await eventually(
                    report, lambda r: bool(_drift_of(r, rollout_id)), timeout=15
                )
                repaired = await api.post("/api/admin/reconciliation")
                assert repaired.status_code == 200, repaired.text
                done = await wait_rollout(api, rollout_id, "SUCCEEDED", "FAILED")
                after = await report()

    assert _drift_of(reported, rollout_id) == [
        {
            "kind": "ROLLOUT_WITHOUT_RUN",
            "tenantId": None,
            "rolloutId": rollout_id,
            "server": None,
            "detail": "rollout is RUNNING, its run is not found",
            "repaired": False,
        }
    ]
    assert [d["repaired"] for d in _drift_of(repaired.json(), rollout_id)] == [True]
    assert _drift_of(after, rollout_id) == []
    # The rows are the truth: the canary is not run again, its failure still counts.
    assert done["status"] == "FAILED", done
    assert done["counts"]["succeeded"] == 4
    assert done["counts"]["failed"] == 1
    assert [w["status"] for w in done["waves"]] == ["FAILED", "SUCCEEDED"]
    called = {c.tenant_id for c in service.calls if "rollout-" in (c.idempotency_key or "")}
    assert called == set(ids[2:])


async def test_a_run_left_open_after_its_rollout_ended_is_reported_and_left_alone(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(
        ("svc", "http://127.0.0.1:9"), create_timeout=timedelta(milliseconds=250)
    )
    ids = await insert_active_tenants(tenants, unique_id("rcend")[:20], 2)
    token = token_for(keys_dir, "remy", WRITE_SCOPE, READ_SCOPE)
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool:
        rollouts = RolloutRepository(pool)
        # No worker: the run stays open after its rollout ended FAILED.
        run = await create_rollout(rollouts, settings, ids, "rita")
        rollout_id = run.rollout_id
        await WorkflowGateway(temporal_client, settings).start_rollout(run)
        await rollouts.change_status(rollout_id, RolloutStatus.FAILED, "test", None, "ended")
        with serve(create_app(settings)) as base:
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api:

                async def report() -> dict[str, Any]:
                    answer = await api.get("/api/admin/reconciliation")
                    assert answer.status_code == 200, answer.text
                    return answer.json()  # type: ignore[no-any-return]

                reported = await eventually(
                    report, lambda r: bool(_drift_of(r, rollout_id)), timeout=15
                )
                repaired = (await api.post("/api/admin/reconciliation")).json()
                still_open = await temporal_client.get_workflow_handle(
                    rollout_workflow_id(rollout_id)
                ).describe()
                await temporal_client.get_workflow_handle(
                    rollout_workflow_id(rollout_id)
                ).terminate("test ends")
                after = await eventually(report, lambda r: not _drift_of(r, rollout_id))

    assert [(d["kind"], d["repaired"]) for d in _drift_of(reported, rollout_id)] == [
        ("ROLLOUT_RUN_AFTER_END", False)
    ]
    assert [(d["kind"], d["repaired"]) for d in _drift_of(repaired, rollout_id)] == [
        ("ROLLOUT_RUN_AFTER_END", False)
    ]
    assert still_open.status is WorkflowExecutionStatus.RUNNING
    assert _drift_of(after, rollout_id) == []


async def test_a_rollout_whose_run_cannot_be_rebuilt_is_reported_and_the_pass_goes_on(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(
        ("svc", "http://127.0.0.1:9"), create_timeout=timedelta(milliseconds=250)
    )
    ids = await insert_active_tenants(tenants, unique_id("rcbad")[:20], 1)
    token = token_for(keys_dir, "remy", WRITE_SCOPE, READ_SCOPE)
    rollout_id = unique_id("rcbad")
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool:
        rollouts = RolloutRepository(pool)
        # A row written without the defaults the API fills in: no run can be built from it.
        await rollouts.create(
            rollout_id,
            RolloutRequest(selector=Selector(tenant_ids=ids)),
            ["svc"],
            [WaveSpec(name="all")],
            "rita",
        )
        try:
            with serve(create_app(settings)) as base:
                async with httpx.AsyncClient(
                    base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
                ) as api:

                    async def repair() -> dict[str, Any]:
                        answer = await api.post("/api/admin/reconciliation")
                        assert answer.status_code == 200, answer.text
                        return answer.json()  # type: ignore[no-any-return]

                    repaired = await eventually(
                        repair, lambda r: bool(_drift_of(r, rollout_id)), timeout=15
                    )
        finally:
            await cancel_rollouts(rollouts, rollout_id)

    [drift] = _drift_of(repaired, rollout_id)
    assert drift["kind"] == "ROLLOUT_WITHOUT_RUN"
    assert drift["repaired"] is False
    assert "not resumed: rollout" in drift["detail"], drift
