"""A rollout reports only work done, against real PostgreSQL, Temporal and HTTP services: a halt
stops starting calls at once, a pause or a resume that lands at an awkward moment of the run
leaves the run and the `rollouts` row in agreement, the wave gate's pauses are the workflow's
own, and the rollout's duration spans all its runs.

Where the moment matters, the test steps into the real run through a wrapped activity
(`tests.support.rollouts`) and acts there through the real API, as an operator would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.auth import READ_SCOPE, ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE, WRITE_SCOPE
from infra.db.repository import TenantRepository
from infra.temporal import connect_client, worker_runtime
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import token_for
from tests.support.fleet import seed_fleet
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.rollouts import (
    around_batch,
    before_wave_status,
    rollout_calls,
    rollout_reaches,
    rollout_stack,
    rollout_view,
    run_shows,
)
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from workflows.rollout.contracts import BatchInput, BatchResult, WaveInput, rollout_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SCOPES = (WRITE_SCOPE, READ_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)
OPERATOR = "olga"


def fast(make_settings: Callable[..., Settings], svc: str, url: str, **overrides: Any) -> Settings:
    """Settings whose failing calls fail fast."""
    return make_settings(
        (svc, url),
        migration_max_attempts=2,
        migration_initial_interval=timedelta(milliseconds=50),
        **overrides,
    )


def service_name() -> str:
    return f"svc-{unique_id('s')[-10:]}"


async def start(api: httpx.AsyncClient, **request: Any) -> str:
    answer = await api.post("/api/rollouts", json=request)
    assert answer.status_code == 202, answer.text
    rollout_id: str = answer.json()["id"]
    return rollout_id


async def audit(api: httpx.AsyncClient, rollout_id: str) -> list[tuple[str, str]]:
    items = (await api.get(f"/api/rollouts/{rollout_id}/events")).json()["items"]
    return [(e["action"], e["actor"]) for e in items]


@pytest.mark.parametrize(
    ("tenants_count", "healthy", "concurrency"),
    [
        # The operator's try: 10 of 12 answer 400, one at a time. The halt is decided when the
        # 10th tenant finishes (min(10, wave size)); nothing is in flight then.
        (12, 2, 1),
        # Every tenant fails, 4 at a time (batches of 16): when the 10th finishes at most 3
        # others are in flight, and no further tenant starts.
        (40, 0, 4),
    ],
    ids=["issue-12-tenants-concurrency-1", "40-failing-concurrency-4"],
)
async def test_a_halt_stops_starting_calls_at_once(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    tenants_count: int,
    healthy: int,
    concurrency: int,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    with serve(service.app()) as url:
        settings = fast(make_settings, svc, url)
        ids = await seed_fleet(settings, tenants, unique_id("halt")[:20], tenants_count)
        for tenant_id in ids[healthy:]:
            service.script(tenant_id, 400)
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        async with rollout_stack(temporal_client, settings, token) as api:
            rid = await start(
                api,
                selector={"tenantIds": ids},
                waves=[{"name": "main"}],
                concurrency=concurrency,
                maxFailureRatio=0.2,
            )
            halted = await rollout_reaches(api, rid, "HALTED", "SUCCEEDED", "FAILED")
            tenant_page = (
                await api.get(f"/api/rollouts/{rid}/tenants", params={"limit": 500})
            ).json()

    calls = rollout_calls(service, rid)
    decided_at = 10
    assert halted["status"] == "HALTED", halted
    # Each tenant is called once (400 is not retried): the calls are the tenants started.
    assert len(calls) == len(set(calls))
    assert decided_at <= len(calls) <= decided_at + concurrency - 1, (len(calls), calls)
    counts = halted["counts"]
    assert counts["running"] == 0, counts
    assert counts["succeeded"] + counts["failed"] == len(calls), counts
    assert counts["pending"] == tenants_count - len(calls), counts
    # The tenants not called are handed back, pending for a resume.
    statuses = {t["tenantId"]: t["status"] for t in tenant_page["items"]}
    assert {t for t, s in statuses.items() if s == "PENDING"} == set(ids) - set(calls)


async def test_a_halt_refused_by_an_earlier_pause_is_written_after_the_resume(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    answers: list[httpx.Response] = []
    holder: dict[str, httpx.AsyncClient] = {}

    async def pause_before_the_halt(request: BatchInput, result: BatchResult) -> None:
        # The batch that crossed the limit read RUNNING; the operator's pause lands before the
        # run writes its halt, which the PAUSED row then refuses.
        if not answers and result.counts.failed >= 10:
            answers.append(await holder["api"].post(f"/api/rollouts/{request.rollout_id}/pause"))

    with serve(service.app()) as url:
        settings = fast(make_settings, svc, url)
        ids = await seed_fleet(settings, tenants, unique_id("refh")[:20], 12)
        for tenant_id in ids:
            service.script(tenant_id, 400)
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        wraps = {"run_rollout_batch": around_batch(after=pause_before_the_halt)}
        async with rollout_stack(temporal_client, settings, token, wraps) as api:
            holder["api"] = api
            rid = await start(
                api,
                selector={"tenantIds": ids},
                waves=[{"name": "main"}],
                concurrency=1,
                maxFailureRatio=0.2,
            )
            await rollout_reaches(api, rid, "PAUSED")
            # Resumed once the run has met the pause with its halt (a resume that the API
            # writes first and the run hears only after its halt would lift the halt instead).
            await run_shows(temporal_client, rid, "PAUSED")
            resumed = await api.post(f"/api/rollouts/{rid}/resume")
            # Acknowledged by the resume of a pause, the halt would let the wave's last
            # tenants be called; unacknowledged, the run halts before calling them.
            halted = await rollout_reaches(api, rid, "HALTED", "SUCCEEDED", "FAILED")
            trail = await audit(api, rid)

    assert [a.status_code for a in answers] == [202], [a.text for a in answers]
    assert resumed.status_code == 202, resumed.text
    assert halted["status"] == "HALTED", halted
    assert len(rollout_calls(service, rid)) == 10, (trail, halted)
    assert halted["counts"]["pending"] == 2, halted["counts"]
    assert [action for action, _ in trail][-1] == "ROLLOUT_HALTED", trail


async def test_a_pause_landing_after_the_last_batch_leaves_no_paused_row_under_a_closed_run(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    paused: list[httpx.Response] = []
    holder: dict[str, httpx.AsyncClient] = {}

    async def pause_before_the_last_wave_closes(request: WaveInput) -> None:
        # The last batch has read the rollout's status (RUNNING) and found nothing left: the
        # operator's pause lands now, before the run writes its final status.
        if request.status.value in ("SUCCEEDED", "FAILED") and not paused:
            paused.append(await holder["api"].post(f"/api/rollouts/{request.rollout_id}/pause"))

    with serve(service.app()) as url:
        settings = fast(make_settings, svc, url)
        ids = await seed_fleet(settings, tenants, unique_id("late")[:20], 3)
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        wraps = {"set_wave_status": before_wave_status(pause_before_the_last_wave_closes)}
        async with rollout_stack(temporal_client, settings, token, wraps) as api:
            holder["api"] = api
            rid = await start(api, selector={"tenantIds": ids}, concurrency=2)
            handle = temporal_client.get_workflow_handle(rollout_workflow_id(rid))
            await handle.result()
            closed = await rollout_view(api, rid)
            resumed = await api.post(f"/api/rollouts/{rid}/resume")
            after_resume = await rollout_view(api, rid)
            trail = await audit(api, rid)

    assert [p.status_code for p in paused] == [202], [p.text for p in paused]
    # The run closed, so the row is final: every tenant has its result.
    assert closed["status"] == "SUCCEEDED", closed
    assert closed["counts"]["succeeded"] == 3, closed["counts"]
    assert resumed.status_code == 409, resumed.text
    assert after_resume["status"] == "SUCCEEDED", after_resume
    workflow_actor = f"workflow:{rollout_workflow_id(rid)}"
    assert trail == [
        ("ROLLOUT_STARTED", OPERATOR),
        ("ROLLOUT_PAUSED", OPERATOR),
        ("ROLLOUT_FINISHED", workflow_actor),
    ]


async def test_a_resume_handled_while_the_paused_batch_result_is_in_flight_is_not_lost(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    answers: list[httpx.Response] = []
    holder: dict[str, httpx.AsyncClient] = {}

    async def pause_first(request: BatchInput) -> None:
        if request.batch == 1:
            answers.append(await holder["api"].post(f"/api/rollouts/{request.rollout_id}/pause"))

    async def resume_before_the_result_arrives(request: BatchInput, result: BatchResult) -> None:
        # The batch read PAUSED; the operator resumes before the run has that result.
        if request.batch == 1 and result.rollout_status.value == "PAUSED":
            answers.append(await holder["api"].post(f"/api/rollouts/{request.rollout_id}/resume"))

    with serve(service.app()) as url:
        settings = fast(make_settings, svc, url)
        ids = await seed_fleet(settings, tenants, unique_id("lost")[:20], 3)
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        wraps = {"run_rollout_batch": around_batch(pause_first, resume_before_the_result_arrives)}
        async with rollout_stack(temporal_client, settings, token, wraps) as api:
            holder["api"] = api
            rid = await start(api, selector={"tenantIds": ids}, concurrency=2)
            # Lost, the resume leaves the row RUNNING under a run that waits for ever.
            done = await rollout_reaches(api, rid, "SUCCEEDED", "FAILED", timeout=30)
            handle = temporal_client.get_workflow_handle(rollout_workflow_id(rid))
            await handle.result()

    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert done["status"] == "SUCCEEDED", done
    assert done["counts"]["succeeded"] == 3, done["counts"]
    assert sorted(rollout_calls(service, rid)) == ids


async def at_gate(api: httpx.AsyncClient, rollout_id: str, wave: int) -> None:
    """Wait until the rollout is paused at the gate after `wave`."""

    def gated(view: dict[str, Any]) -> bool:
        return bool(view["status"] == "PAUSED" and view["waves"][wave]["status"] == "SUCCEEDED")

    await eventually(lambda: rollout_view(api, rollout_id), gated)


async def test_the_wave_gate_pauses_are_the_workflows_own(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    with serve(service.app()) as url:
        settings = fast(make_settings, svc, url)
        ids = await seed_fleet(settings, tenants, unique_id("gate")[:20], 3)
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        async with rollout_stack(temporal_client, settings, token) as api:
            rid = await start(
                api,
                selector={"tenantIds": ids},
                waves=[{"name": "one", "size": 1}, {"name": "two", "size": 1}, {"name": "three"}],
                pauseAfterEachWave=True,
            )
            for wave in (0, 1):
                await at_gate(api, rid, wave)
                resumed = await api.post(f"/api/rollouts/{rid}/resume")
                assert resumed.status_code == 202, resumed.text
            done = await rollout_reaches(api, rid, "SUCCEEDED", "FAILED")
            trail = await audit(api, rid)

    workflow_actor = f"workflow:{rollout_workflow_id(rid)}"
    assert done["status"] == "SUCCEEDED", done
    assert trail == [
        ("ROLLOUT_STARTED", OPERATOR),
        ("ROLLOUT_PAUSED", workflow_actor),
        ("ROLLOUT_RESUMED", OPERATOR),
        ("ROLLOUT_PAUSED", workflow_actor),
        ("ROLLOUT_RESUMED", OPERATOR),
        ("ROLLOUT_FINISHED", workflow_actor),
    ]


@pytest.mark.timeout(240)
async def test_the_rollout_duration_spans_every_run_across_continue_as_new(
    short_history_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    service = ScriptedService(version="v2")
    svc = service_name()
    address = f"127.0.0.1:{free_port()}"
    with serve(service.app()) as url:
        settings = fast(
            make_settings,
            svc,
            url,
            temporal_address=short_history_client.service_client.config.target_host,
            worker_metrics_address=address,
        )
        # 30 batches of 4, one tenant at a time: several runs, each a fraction of the whole.
        ids = await seed_fleet(settings, tenants, unique_id("span")[:20], 120)
        client = await connect_client(settings, runtime=worker_runtime(settings))
        token = token_for(keys_dir, OPERATOR, *SCOPES)
        async with rollout_stack(client, settings, token) as api:
            rid = await start(api, selector={"tenantIds": ids}, concurrency=1)
            done = await rollout_reaches(api, rid, "SUCCEEDED", "FAILED", timeout=180)
            samples = await eventually(
                lambda: scrape(address),
                lambda s: (
                    (value(s, "platform_rollout_duration_count", result="SUCCEEDED") or 0) >= 1
                ),
            )
        runs = [
            execution
            async for execution in client.list_workflows(f"WorkflowId='{rollout_workflow_id(rid)}'")
        ]

    assert done["status"] == "SUCCEEDED", done
    assert len(runs) >= 3, [r.run_id for r in runs]
    first_start = min(r.start_time for r in runs)
    last_close = max(r.close_time for r in runs if r.close_time is not None)
    longest_run = max(
        (r.close_time - r.start_time).total_seconds() for r in runs if r.close_time is not None
    )
    whole = (last_close - first_start).total_seconds()
    recorded = (value(samples, "platform_rollout_duration_sum", result="SUCCEEDED") or 0) / 1000
    assert value(samples, "platform_rollout_duration_count", result="SUCCEEDED") == 1
    # A run's own duration is at most the longest run's; the rollout's spans them all (less the
    # wait for the first workflow task and the final close).
    assert recorded > longest_run, (recorded, longest_run, whole)
    assert whole * 0.75 <= recorded <= whole + 1, (recorded, whole)
