"""A rollout's row and its run never disagree when a start races or is lost: retry-failed
against a run that is still closing, a start whose answer was lost after the server accepted
it, and a start that never reached the server (real PostgreSQL and Temporal dev server; the
faults are injected at the client by an interceptor)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.auth import ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE
from api.errors import ServiceUnavailable
from api.gateway import RolloutRunNotStarted, WorkflowGateway
from api.main import create_app
from api.routes.rollouts import start_run
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from tenancy.rollouts import RolloutStatus
from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.integration.test_api import token_for
from tests.support.rollouts import cancel_rollouts, create_rollout, insert_active_tenants
from tests.support.servers import serve
from tests.support.temporal_faults import (
    Describes,
    LostStarts,
    UnansweredStarts,
    client_with,
)
from workflows.rollout.contracts import rollout_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@asynccontextmanager
async def _repository(url: str) -> AsyncIterator[RolloutRepository]:
    async with AsyncConnectionPool(url, min_size=1, max_size=2) as pool:
        yield RolloutRepository(pool)


@asynccontextmanager
async def _api_without_worker(
    settings: Settings, keys_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API alone: the runs it starts stay open (no worker takes them), as a run does
    between writing its rollout's final status and closing."""
    token = token_for(keys_dir, "rui", ROLLOUTS_READ_SCOPE, ROLLOUTS_WRITE_SCOPE)
    with serve(create_app(settings)) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            yield api


async def _closing_rollout(
    api: httpx.AsyncClient, rollouts: RolloutRepository, ids: list[str]
) -> str:
    """A rollout whose row ended FAILED while its run is still open (the closing run)."""
    answer = await api.post("/api/rollouts", json={"selector": {"tenantIds": ids}})
    assert answer.status_code == 202, answer.text
    rollout_id: str = answer.json()["id"]
    await rollouts.change_status(rollout_id, RolloutStatus.FAILED, "test", None, "1 failed")
    return rollout_id


async def _latest_run(client: Client, rollout_id: str) -> Any:
    return await client.get_workflow_handle(rollout_workflow_id(rollout_id)).describe()


async def _terminate(client: Client, rollout_id: str) -> None:
    try:
        await client.get_workflow_handle(rollout_workflow_id(rollout_id)).terminate("test ends")
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise


async def test_retry_failed_waits_for_the_closing_run_then_starts_the_next_pass(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"))
    ids = await insert_active_tenants(tenants, unique_id("close")[:20], 2)
    async with (
        _repository(platform_db_url) as rollouts,
        _api_without_worker(settings, keys_dir) as api,
    ):
        rollout_id = await _closing_rollout(api, rollouts, ids)
        closing = await _latest_run(temporal_client, rollout_id)
        retry = asyncio.create_task(api.post(f"/api/rollouts/{rollout_id}/retry-failed"))
        await temporal_client.get_workflow_handle(
            rollout_workflow_id(rollout_id), run_id=closing.run_id
        ).terminate("the closing run closes")
        answer = await retry
        row = await rollouts.get(rollout_id)
        latest = await _latest_run(temporal_client, rollout_id)
        await _terminate(temporal_client, rollout_id)
        await cancel_rollouts(rollouts, rollout_id)

    assert answer.status_code == 202, answer.text
    assert (row.status, row.pass_number) == (RolloutStatus.RUNNING, 2)
    assert latest.status is WorkflowExecutionStatus.RUNNING
    assert latest.run_id != closing.run_id


async def test_the_wait_for_the_last_run_ends_when_the_run_closes(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"), create_timeout=timedelta(seconds=20))
    ids = await insert_active_tenants(tenants, unique_id("wait")[:20], 2)
    probe = Describes()
    gateway = WorkflowGateway(client_with(temporal_client, probe), settings)
    async with (
        _repository(platform_db_url) as rollouts,
        _api_without_worker(settings, keys_dir) as api,
    ):
        rollout_id = await _closing_rollout(api, rollouts, ids)
        waiting = asyncio.create_task(gateway.rollout_run_closed(rollout_id))
        # The run is seen open, then closes while the caller waits.
        await asyncio.wait_for(probe.described.wait(), timeout=10)
        await _terminate(temporal_client, rollout_id)
        closed = await asyncio.wait_for(waiting, timeout=10)

    assert closed is True


async def test_retry_failed_refused_while_the_last_run_stays_open_changes_nothing(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"), create_timeout=timedelta(seconds=1))
    ids = await insert_active_tenants(tenants, unique_id("open")[:20], 2)
    async with (
        _repository(platform_db_url) as rollouts,
        _api_without_worker(settings, keys_dir) as api,
    ):
        rollout_id = await _closing_rollout(api, rollouts, ids)
        closing = await _latest_run(temporal_client, rollout_id)
        refused = await api.post(f"/api/rollouts/{rollout_id}/retry-failed")
        row_refused = await rollouts.get(rollout_id)
        still = await _latest_run(temporal_client, rollout_id)
        await _terminate(temporal_client, rollout_id)
        again = await api.post(f"/api/rollouts/{rollout_id}/retry-failed")
        row_again = await rollouts.get(rollout_id)
        latest = await _latest_run(temporal_client, rollout_id)
        await _terminate(temporal_client, rollout_id)
        await cancel_rollouts(rollouts, rollout_id)

    assert refused.status_code == 409, refused.text
    assert (row_refused.status, row_refused.pass_number) == (RolloutStatus.FAILED, 1)
    assert (still.run_id, still.status) == (closing.run_id, WorkflowExecutionStatus.RUNNING)
    # Once the run closed, the same request goes through: nothing was left half done.
    assert again.status_code == 202, again.text
    assert (row_again.status, row_again.pass_number) == (RolloutStatus.RUNNING, 2)
    assert latest.status is WorkflowExecutionStatus.RUNNING
    assert latest.run_id != closing.run_id


async def test_a_start_accepted_but_answered_with_an_error_keeps_the_rollout_running(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"))
    ids = await insert_active_tenants(tenants, unique_id("lost")[:20], 2)
    lost = LostStarts(reach_server=True)
    gateway = WorkflowGateway(client_with(temporal_client, lost), settings)
    async with _repository(platform_db_url) as rollouts:
        run = await create_rollout(rollouts, settings, ids, "lou")
        await start_run(gateway, rollouts, run)
        row = await rollouts.get(run.rollout_id)
        latest = await _latest_run(temporal_client, run.rollout_id)
        await _terminate(temporal_client, run.rollout_id)
        await cancel_rollouts(rollouts, run.rollout_id)

    assert lost.starts == 1
    assert row.status is RolloutStatus.RUNNING
    assert latest.status is WorkflowExecutionStatus.RUNNING


@pytest.mark.parametrize(
    ("refusal", "left"),
    [
        # The server refused the start: no run can appear, the rollout fails.
        (RPCStatusCode.RESOURCE_EXHAUSTED, RolloutStatus.FAILED),
        # The server may still be committing it: the row is left to the reconciler.
        (RPCStatusCode.UNAVAILABLE, RolloutStatus.RUNNING),
        (RPCStatusCode.DEADLINE_EXCEEDED, RolloutStatus.RUNNING),
    ],
)
async def test_a_start_that_never_reached_temporal_fails_the_rollout_only_when_refused(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
    refusal: RPCStatusCode,
    left: RolloutStatus,
) -> None:
    settings = make_settings(("svc", "http://127.0.0.1:9"))
    ids = await insert_active_tenants(tenants, unique_id("never")[:20], 2)
    lost = LostStarts(reach_server=False, status=refusal)
    gateway = WorkflowGateway(client_with(temporal_client, lost), settings)
    async with _repository(platform_db_url) as rollouts:
        run = await create_rollout(rollouts, settings, ids, "nina")
        with pytest.raises(ServiceUnavailable):
            await start_run(gateway, rollouts, run)
        row = await rollouts.get(run.rollout_id)
        with pytest.raises(RPCError) as described:
            await _latest_run(temporal_client, run.rollout_id)
        if row.status is RolloutStatus.RUNNING:
            await cancel_rollouts(rollouts, run.rollout_id)

    assert lost.starts == 1
    assert row.status is left
    assert described.value.status is RPCStatusCode.NOT_FOUND


async def test_a_start_given_up_on_leaves_the_rollout_to_the_reconciler(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    platform_db_url: str,
    tenants: TenantRepository,
) -> None:
    settings = make_settings(
        ("svc", "http://127.0.0.1:9"), create_timeout=timedelta(milliseconds=300)
    )
    ids = await insert_active_tenants(tenants, unique_id("hung")[:20], 2)
    gateway = WorkflowGateway(client_with(temporal_client, UnansweredStarts()), settings)
    async with _repository(platform_db_url) as rollouts:
        run = await create_rollout(rollouts, settings, ids, "hugo")
        with pytest.raises(ServiceUnavailable) as refused:
            await start_run(gateway, rollouts, run)
        row = await rollouts.get(run.rollout_id)
        await cancel_rollouts(rollouts, run.rollout_id)

    # The start may still be under way on the server: the rollout is not declared FAILED (a run
    # could come), and the reconciler starts one if none does.
    assert not isinstance(refused.value, RolloutRunNotStarted)
    assert refused.value.extensions["rolloutId"] == run.rollout_id
    assert row.status is RolloutStatus.RUNNING
