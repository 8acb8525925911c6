"""Record workflow histories from real runs, for the replay test (`make record-history`).

Starts its own embedded PostgreSQL, Temporal dev server and scripted downstream services,
provisions tenants through scenarios that cover every branch of the workflow, and writes
each history to `tests/histories/<scenario>_<suffix>.json`, never overwriting one. Commit new
files; never edit old ones: they are what runs already in flight look like.

The `moves` family (`make record-history ONLY=moves`) is `tests.support.record_move_history`:
MoveTenantWorkflow needs two storage servers with the deployment's roles, which it starts
itself (a completed move, a rolled-back one, a cancelled one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.gateway import WorkflowGateway
from api.routes.rollouts import _resolved, start_run
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import cli_path
from infra.db.deletions import DeletionRepository
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.db.schema import apply_platform_migrations
from infra.security.keys import generate_private_key
from infra.temporal import ensure_search_attributes, exit_process
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.naming import deletion_workflow_id, provision_workflow_id
from tenancy.rollouts import RolloutAction, RolloutRequest, RolloutStatus, WaveSpec
from tenancy.settings import DownstreamService, Settings
from tenancy.status import TenantStatus
from tests.support import record_move_history
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve
from tests.support.workers import worker_not_polling
from worker import build_worker, worker_activities
from workflows.delete import contracts as deletion
from workflows.delete.contracts import DeletionState
from workflows.provision.contracts import ProvisionState
from workflows.provision.workflow import ProvisionTenantWorkflow
from workflows.rollout import contracts as rollout
from workflows.rollout.starts import rollout_input

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# Which workflow's scenarios to record: a new workflow's histories need not re-record the others.
FAMILIES = frozenset({"provision", "deletion", "rollout", "moves"})
_log = logging.getLogger("record_history")


async def _wait_until(
    handle: WorkflowHandle[ProvisionTenantWorkflow, ProvisionState], status: TenantStatus
) -> None:
    for _ in range(600):
        state = await handle.query(ProvisionTenantWorkflow.get_status)
        if state.status is status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{handle.id} never reached {status}")


def _save(history: WorkflowHistory, name: str) -> None:
    target = HISTORIES / f"{name}.json"
    if target.exists():
        raise FileExistsError(f"{target} exists: histories are never overwritten")
    target.write_text(history.to_json())
    _log.info("wrote %s (%d events)", target, len(history.events))


async def record(
    client: Client,
    settings: Settings,
    service: ScriptedService,
    suffix: str,
    tenants: TenantRepository,
    rollouts: RolloutRepository,
    deletions: DeletionRepository,
    families: frozenset[str] = FAMILIES,
) -> None:
    """Run each scenario of the chosen families and save its history."""
    gateway = WorkflowGateway(client, settings)
    if "rollout" in families:
        await _record_rollouts(client, gateway, settings, service, suffix, rollouts)
    if "deletion" in families:
        await _record_deletion(client, gateway, service, suffix, deletions)
    if "provision" not in families:
        return
    scenarios = {
        "active_schema": (StorageMode.SCHEMA, []),
        "active_database": (StorageMode.DATABASE, []),
        "retry_after_rejection": (StorageMode.SCHEMA, [503, 400, 200]),
    }
    for name, (mode, script) in scenarios.items():
        tenant_id = f"{name}_{suffix}"[:40]
        if script:
            service.script(tenant_id, *script)
        await gateway.provision(
            TenantSpec(id=tenant_id, name=name, storage_mode=mode, sla_tier=SlaTier.STANDARD)
        )
        handle = client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
        )
        if script:
            await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
            await handle.signal(ProvisionTenantWorkflow.retry_migration)
        await handle.result()
        _save(await handle.fetch_history(), f"{name}_{suffix}")
    # The API's own path (POST /api/tenants): a plain start and the row written by the API,
    # no client waiting for `tenant_recorded`.
    created = f"created_schema_{suffix}"[:40]
    await gateway.create(
        TenantSpec(
            id=created, name="created", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.STANDARD
        ),
        tenants,
    )
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(created)
    )
    await handle.result()
    _save(await handle.fetch_history(), f"created_schema_{suffix}")
    await _record_recovery(client, gateway, service, suffix, tenants)
    await _record_unpolled(client, settings, suffix)


def _failing_tenant(service: ScriptedService, name: str, suffix: str) -> TenantSpec:
    tenant_id = f"{name[:12]}_{suffix}"[:40]
    service.script(tenant_id, 400)
    return TenantSpec(
        id=tenant_id, name=name, storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )


async def _record_recovery(
    client: Client,
    gateway: WorkflowGateway,
    service: ScriptedService,
    suffix: str,
    tenants: TenantRepository,
) -> None:
    """A run that continues as new while it waits, a retry through the update, a cancelled
    run, an adopting run."""
    spec = _failing_tenant(service, "continued", suffix)
    await gateway.provision(spec)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(spec.id)
    )
    first = await handle.describe()
    while (await handle.describe()).run_id == first.run_id:
        await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
        await handle.signal(ProvisionTenantWorkflow.retry_migration)
        await asyncio.sleep(0.2)
    first_run = client.get_workflow_handle(provision_workflow_id(spec.id), run_id=first.run_id)
    _save(await first_run.fetch_history(), f"continued_as_new_{suffix}")
    service.script(spec.id, 200)
    await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
    await handle.signal(ProvisionTenantWorkflow.retry_migration)
    await handle.result()
    _save(await handle.fetch_history(), f"resumed_after_continue_as_new_{suffix}")

    spec = _failing_tenant(service, "retried", suffix)
    await gateway.provision(spec)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(spec.id)
    )
    await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
    service.script(spec.id, 200)
    decision = await gateway.request_retry(spec.id, "recorder")
    assert decision is not None
    assert decision.accepted
    await handle.result()
    _save(await handle.fetch_history(), f"retried_by_update_{suffix}")

    spec = _failing_tenant(service, "cancelled", suffix)
    await gateway.provision(spec)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(spec.id)
    )
    await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
    await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    _save(await handle.fetch_history(), f"cancelled_waiting_{suffix}")

    spec = _failing_tenant(service, "adopted", suffix)
    await gateway.provision(spec)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(spec.id)
    )
    await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
    await handle.terminate("recording: a lost run")
    service.script(spec.id, 200)
    tenant = await tenants.get(spec.id)
    assert tenant is not None
    await gateway.adopt(tenant, "recorder", "retry-migration")
    await handle.result()
    _save(await handle.fetch_history(), f"adopted_after_terminate_{suffix}")


async def _record_unpolled(client: Client, settings: Settings, suffix: str) -> None:
    """A migration call that no worker takes within the bound, then retry-migration once a
    worker polls the service's queue. On a task queue of its own, whose first workers leave
    the service's queue unpolled."""
    own = settings.model_copy(
        update={
            "task_queue": f"unpolled-{suffix}",
            "migration_schedule_to_start": timedelta(seconds=1),
        }
    )
    gateway = WorkflowGateway(client, own)
    tenant_id = f"unpolled_{suffix}"
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
    )
    async with worker_not_polling(client, own, own.downstream_services[0].name):
        await gateway.provision(
            TenantSpec(
                id=tenant_id,
                name="unpolled",
                storage_mode=StorageMode.SCHEMA,
                sla_tier=SlaTier.BASIC,
            )
        )
        await _wait_until(handle, TenantStatus.MIGRATION_ERROR)
    async with worker_activities(own) as activities, build_worker(client, own, activities):
        decision = await gateway.request_retry(tenant_id, "recorder")
        assert decision is not None
        assert decision.accepted
        await handle.result()
    _save(await handle.fetch_history(), f"unpolled_retried_{suffix}")


async def _active(gateway: WorkflowGateway, client: Client, name: str, suffix: str) -> str:
    tenant_id = f"{name[:14]}_{suffix}"[:40]
    await gateway.provision(
        TenantSpec(
            id=tenant_id, name=name, storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.STANDARD
        )
    )
    await client.get_workflow_handle(provision_workflow_id(tenant_id)).result()
    return tenant_id


async def _deletion_until(handle: WorkflowHandle[Any, DeletionState], status: TenantStatus) -> None:
    for _ in range(600):
        state = await handle.query(deletion.STATUS_QUERY, result_type=DeletionState)
        if state.status is status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{handle.id} never reached {status}")


async def _record_deletion(
    client: Client,
    gateway: WorkflowGateway,
    service: ScriptedService,
    suffix: str,
    deletions: DeletionRepository,
) -> None:
    """A purge with backup, a restore in the grace period, a restore the run hears of only
    after its grace period, a failed teardown retried through the update, and a cancelled
    purge."""
    tenant_id = await _active(gateway, client, "deleted", suffix)
    await gateway.schedule_deletion(tenant_id, "recorder", "recording", 0)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    await handle.result()
    _save(await handle.fetch_history(), f"deleted_with_backup_{suffix}")

    tenant_id = await _active(gateway, client, "restored", suffix)
    await gateway.schedule_deletion(tenant_id, "recorder", "recording", 3600)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    assert await gateway.cancel_deletion(tenant_id, "recorder", "recording")
    await handle.result()
    _save(await handle.fetch_history(), f"deletion_restored_{suffix}")

    tenant_id = await _active(gateway, client, "restlate", suffix)
    await gateway.schedule_deletion(tenant_id, "recorder", "recording", 1)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    # Written as the API writes a restore, with no signal: the grace period ends first.
    await deletions.take_restore(tenant_id, "recorder", "recording")
    await handle.result()
    _save(await handle.fetch_history(), f"deletion_restored_before_purge_{suffix}")

    tenant_id = await _active(gateway, client, "delretry", suffix)
    service.script_teardown(tenant_id, 400)
    await gateway.schedule_deletion(tenant_id, "recorder", "recording", 0)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    await _deletion_until(handle, TenantStatus.DELETION_ERROR)
    service.script_teardown(tenant_id, 200)
    decision = await gateway.request_deletion_retry(tenant_id, "recorder")
    assert decision is not None
    assert decision.accepted
    await handle.result()
    _save(await handle.fetch_history(), f"deletion_retried_by_update_{suffix}")

    tenant_id = await _active(gateway, client, "delcancel", suffix)
    service.script_teardown(tenant_id, 400)
    await gateway.schedule_deletion(tenant_id, "recorder", "recording", 0)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    await _deletion_until(handle, TenantStatus.DELETION_ERROR)
    await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    _save(await handle.fetch_history(), f"deletion_cancelled_waiting_{suffix}")


async def _rollout(
    client: Client,
    settings: Settings,
    rollouts: RolloutRepository,
    tenant_ids: list[str],
    waves: list[WaveSpec],
    pause_after_each_wave: bool = False,
) -> tuple[str, WorkflowHandle[Any, rollout.RolloutProgress]]:
    """Start a rollout of `tenant_ids` as `POST /api/rollouts` does."""
    request = _resolved(
        RolloutRequest.model_validate(
            {
                "selector": {"tenantIds": tenant_ids},
                "waves": [w.model_dump(by_alias=True, exclude_none=True) for w in waves],
                "concurrency": 2,
                "maxFailureRatio": 0.05,
                "pauseAfterEachWave": pause_after_each_wave,
            }
        ),
        settings,
    )
    rollout_id = f"rec{datetime.now(UTC).strftime('%H%M%S%f')}"
    assert request.services is not None
    assert request.waves is not None
    await rollouts.create(rollout_id, request, request.services, request.waves, "recorder")
    await start_run(
        WorkflowGateway(client, settings),
        rollouts,
        rollout_input(rollout_id, request, settings, "recorder"),
    )
    handle = client.get_workflow_handle(
        rollout.rollout_workflow_id(rollout_id), result_type=rollout.RolloutProgress
    )
    return rollout_id, handle


async def _rollout_until(
    rollouts: RolloutRepository, rollout_id: str, status: RolloutStatus
) -> None:
    for _ in range(600):
        if await rollouts.status(rollout_id) is status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"rollout {rollout_id} never reached {status}")


async def _operator(
    client: Client,
    rollouts: RolloutRepository,
    rollout_id: str,
    target: RolloutStatus,
    action: RolloutAction,
    signal: str,
) -> None:
    """What the API's pause, resume and cancel do: the table first, then the signal."""
    await rollouts.change_status(rollout_id, target, "recorder", action)
    await client.get_workflow_handle(rollout.rollout_workflow_id(rollout_id)).signal(
        signal, rollout.RolloutSignal(requested_by="recorder")
    )


async def _record_rollouts(
    client: Client,
    gateway: WorkflowGateway,
    settings: Settings,
    service: ScriptedService,
    suffix: str,
    rollouts: RolloutRepository,
) -> None:
    """A rollout in two waves, one halted by a failing canary then resumed, one paused between
    its waves then resumed, one cancelled while paused."""
    fleet = [await _active(gateway, client, f"ro{i}", suffix) for i in range(4)]
    two_waves = [WaveSpec(name="canary", size=1), WaveSpec(name="rest")]

    _, handle = await _rollout(client, settings, rollouts, fleet, two_waves)
    await handle.result()
    _save(await handle.fetch_history(), f"rollout_two_waves_{suffix}")

    service.script(fleet[0], 400)
    rollout_id, handle = await _rollout(
        client, settings, rollouts, fleet, [WaveSpec(name="canary", size=2), WaveSpec(name="rest")]
    )
    await _rollout_until(rollouts, rollout_id, RolloutStatus.HALTED)
    await _operator(
        client,
        rollouts,
        rollout_id,
        RolloutStatus.RUNNING,
        RolloutAction.RESUMED,
        rollout.RESUME_SIGNAL,
    )
    await handle.result()
    _save(await handle.fetch_history(), f"rollout_halted_resumed_{suffix}")
    service.script(fleet[0], 200)

    rollout_id, handle = await _rollout(client, settings, rollouts, fleet, two_waves, True)
    await _rollout_until(rollouts, rollout_id, RolloutStatus.PAUSED)
    await _operator(
        client,
        rollouts,
        rollout_id,
        RolloutStatus.RUNNING,
        RolloutAction.RESUMED,
        rollout.RESUME_SIGNAL,
    )
    await handle.result()
    _save(await handle.fetch_history(), f"rollout_paused_resumed_{suffix}")

    rollout_id, handle = await _rollout(client, settings, rollouts, fleet, two_waves, True)
    await _rollout_until(rollouts, rollout_id, RolloutStatus.PAUSED)
    await _operator(
        client,
        rollouts,
        rollout_id,
        RolloutStatus.CANCELLED,
        RolloutAction.CANCELLED,
        rollout.CANCEL_SIGNAL,
    )
    await handle.result()
    _save(await handle.fetch_history(), f"rollout_cancelled_{suffix}")


async def main(suffix: str, families: frozenset[str] = FAMILIES) -> None:
    """Bring up the real infrastructure in a temporary folder and record."""
    if "moves" in families:
        await record_move_history.main(suffix)
        families = families - {"moves"}
    if not families:
        return
    with (
        tempfile.TemporaryDirectory() as scratch,
        EmbeddedPostgres(Path(scratch) / "pg", free_port(), durable=False) as pg,
    ):
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("platform")))
        database_url = pg.url.rsplit("/", 1)[0] + "/platform"
        apply_platform_migrations(database_url)
        service = ScriptedService(version="0002")
        with serve(service.app()) as url:
            key_file = Path(scratch) / "signing.pem"
            generate_private_key(key_file)
            settings = Settings(
                database_url=database_url,
                downstream_services=(DownstreamService(name="backend-service", base_url=url),),
                migration_max_attempts=2,
                migration_initial_interval=timedelta(milliseconds=50),
                signing_key_file=key_file,
                deletion_backup_dir=Path(scratch) / "backups",
            )
            env = await WorkflowEnvironment.start_local(
                data_converter=pydantic_data_converter,
                dev_server_existing_path=str(cli_path()),
                # Continue-as-new is suggested after a few dozen events, not thousands, so
                # the recording reaches it.
                dev_server_extra_args=[
                    "--dynamic-config-value",
                    "limit.historyCount.suggestContinueAsNew=60",
                ],
            )
            try:
                await ensure_search_attributes(env.client)
                async with (
                    AsyncConnectionPool(database_url, min_size=1, max_size=2) as pool,
                    worker_activities(settings) as activities,
                    build_worker(env.client, settings, activities),
                ):
                    await record(
                        env.client,
                        settings,
                        service,
                        suffix,
                        TenantRepository(pool),
                        RolloutRepository(pool),
                        DeletionRepository(pool),
                        families,
                    )
            finally:
                await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suffix",
        default=datetime.now(UTC).strftime("%Y%m%d%H%M"),
        help="names this recording (file names and tenant ids); default: the UTC time",
    )
    parser.add_argument(
        "--only",
        choices=sorted(FAMILIES),
        action="append",
        help="record only this workflow's scenarios (repeatable); default: all",
    )
    logging.basicConfig(level=logging.INFO)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.suffix, frozenset(arguments.only or FAMILIES)))
    exit_process(0)
