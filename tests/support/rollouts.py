"""Rollout set-ups shared by the rollout tests: tenant rows written straight into the table
(the rollout, not provisioning, is the subject) and rollout requests; rollout runs a test can
step into (the real worker and API with one rollout activity wrapped, so a test can act at an
exact point of the run, as an operator whose request lands there would); and what the
downstream service received for a rollout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client

from api.main import create_app
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.rollouts import RolloutRequest, RolloutStatus, Selector, WaveSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from worker import build_worker, worker_activities
from workflows.rollout.contracts import (
    PROGRESS_QUERY,
    BatchInput,
    BatchResult,
    RolloutInput,
    RolloutProgress,
    WaveInput,
    rollout_workflow_id,
)
from workflows.rollout.starts import rollout_input

Activity = Callable[..., Any]
Wrap = Callable[[Activity], Activity]


@asynccontextmanager
async def rollout_stack(
    client: Client, settings: Settings, token: str, wraps: Mapping[str, Wrap] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The worker (its activities as `python worker.py` builds them, those named in `wraps`
    wrapped) and the API; yields an HTTP client of the API sending `token`."""
    chosen = wraps or {}
    async with worker_activities(settings, client=client) as activities:
        swapped = [chosen[fn.__name__](fn) if fn.__name__ in chosen else fn for fn in activities]
        async with build_worker(client, settings, swapped):
            with serve(create_app(settings)) as base_url:
                async with httpx.AsyncClient(
                    base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
                ) as http:
                    yield http


def around_batch(
    before: Callable[[BatchInput], Awaitable[None]] | None = None,
    after: Callable[[BatchInput, BatchResult], Awaitable[None]] | None = None,
) -> Wrap:
    """`run_rollout_batch` with `before` run ahead of the real batch and `after` once it has
    its result, before that result reaches the workflow."""

    def wrap(original: Activity) -> Activity:
        @activity.defn(name="run_rollout_batch")
        async def run_rollout_batch(request: BatchInput) -> BatchResult:
            if before is not None:
                await before(request)
            result: BatchResult = await original(request)
            if after is not None:
                await after(request, result)
            return result

        return run_rollout_batch

    return wrap


def before_wave_status(hook: Callable[[WaveInput], Awaitable[None]]) -> Wrap:
    """`set_wave_status` with `hook` run ahead of the real write."""

    def wrap(original: Activity) -> Activity:
        @activity.defn(name="set_wave_status")
        async def set_wave_status(request: WaveInput) -> None:
            await hook(request)
            await original(request)

        return set_wave_status

    return wrap


def rollout_calls(service: ScriptedService, rollout_id: str, pass_number: int = 1) -> list[str]:
    """The tenants the rollout's pass called, in the order the service received the calls."""
    prefix = f"rollout-{rollout_id}/pass-{pass_number}/"
    return [c.tenant_id for c in service.calls if (c.idempotency_key or "").startswith(prefix)]


async def rollout_view(api: httpx.AsyncClient, rollout_id: str) -> dict[str, Any]:
    """`GET /api/rollouts/{id}`."""
    answer = await api.get(f"/api/rollouts/{rollout_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def rollout_reaches(
    api: httpx.AsyncClient, rollout_id: str, *statuses: str, timeout: float = 60.0
) -> dict[str, Any]:
    """The rollout once its status is one of `statuses`."""
    return await eventually(
        lambda: rollout_view(api, rollout_id),
        lambda r: r.get("status") in statuses,
        timeout=timeout,
    )


async def batches_done(
    client: Client, rollout_id: str, batches: int, timeout: float = 60.0
) -> RolloutProgress:
    """The run's progress once it has finished `batches` batch activities."""
    return await _progress_when(client, rollout_id, lambda p: p.batch > batches, timeout)


async def insert_active_tenants(tenants: TenantRepository, prefix: str, count: int) -> list[str]:
    """`count` ACTIVE tenant rows (no storage): enough for a rollout to select and count."""
    ids = [f"{prefix}_{i:03d}" for i in range(count)]
    for tenant_id in ids:
        spec = TenantSpec(
            id=tenant_id, name=tenant_id, storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.STANDARD
        )
        await tenants.insert(spec, f"wf-{tenant_id}", "seeded", ["svc"], "seed")
        for target in (TenantStatus.MIGRATING, TenantStatus.ACTIVE):
            await tenants.transition(tenant_id, target, None, "seed")
    return ids


async def create_rollout(
    rollouts: RolloutRepository,
    settings: Settings,
    tenant_ids: list[str],
    actor: str,
    waves: list[WaveSpec] | None = None,
) -> RolloutInput:
    """A rollout of `tenant_ids` over the settings' services, recorded (RUNNING, its tenants
    PENDING) but not started; returns the input its run takes."""
    services = [service.name for service in settings.downstream_services]
    request = RolloutRequest(
        services=services,
        selector=Selector(tenant_ids=tenant_ids),
        waves=waves or [WaveSpec(name="all")],
        concurrency=2,
        max_failure_ratio=0.5,
    )
    rollout_id = uuid.uuid4().hex[:12]
    assert request.waves is not None
    await rollouts.create(rollout_id, request, services, request.waves, actor)
    return rollout_input(rollout_id, request, settings, actor)


async def cancel_rollouts(rollouts: RolloutRepository, *rollout_ids: str) -> None:
    """End rollouts a test left RUNNING without a run, so no later reconciliation in the
    session reports them."""
    for rollout_id in rollout_ids:
        await rollouts.change_status(rollout_id, RolloutStatus.CANCELLED, "test", None, "test ends")


async def run_shows(
    client: Client, rollout_id: str, status: str, timeout: float = 60.0
) -> RolloutProgress:
    """The run's progress once the run itself (its `progress` query, not the row) shows
    `status`."""
    return await _progress_when(client, rollout_id, lambda p: p.status.value == status, timeout)


async def _progress_when(
    client: Client, rollout_id: str, done: Callable[[RolloutProgress], bool], timeout: float
) -> RolloutProgress:
    handle = client.get_workflow_handle(rollout_workflow_id(rollout_id))

    async def probe() -> RolloutProgress:
        progress: RolloutProgress = await handle.query(PROGRESS_QUERY, result_type=RolloutProgress)
        return progress

    return await eventually(probe, done, timeout=timeout)
