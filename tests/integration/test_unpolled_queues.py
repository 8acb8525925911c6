"""A migration call scheduled on a task queue that no worker polls (a deploy left it behind):
it fails its attempt after PLATFORM_MIGRATION_SCHEDULE_TO_START instead of waiting for ever,
retry-migration finishes it once a worker polls, and the reconciler reports the wait. Real
Temporal dev server, real PostgreSQL, real HTTP services."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from reconciliation import Drift, Reconciler, ReconciliationReport
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import migration_task_queue, provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.workers import worker_not_polling
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
UNPOLLED = "UNPOLLED_QUEUE"


def spec(tenant_id: str) -> TenantSpec:
    return TenantSpec(
        id=tenant_id, name="Unpolled Corp", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )


def unpolled(report: ReconciliationReport) -> list[Drift]:
    return [d for d in report.drift if d.kind == UNPOLLED]


async def test_a_call_no_worker_takes_fails_after_the_bound_and_a_retry_finishes_it(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> None:
    settings = make_settings(
        ("backend-service", backend[1]),
        ("auth-service", auth[1]),
        migration_schedule_to_start=timedelta(seconds=2),
    )
    request = spec(unique_id("uq"))
    gateway = WorkflowGateway(temporal_client, settings)
    async with worker_not_polling(temporal_client, settings, "auth-service") as queue:
        await gateway.provision(request)
        failed = await eventually(
            lambda: tenants.get(request.id),
            lambda t: t is not None and t.status is TenantStatus.MIGRATION_ERROR,
        )
    assert failed is not None
    never_taken = f"no worker took the call from task queue {queue} within 2 s"
    assert (
        failed.status_reason == f"migration failed for: auth-service (auth-service: {never_taken})"
    )
    records = {m.service: m for m in failed.migrations}
    assert records["backend-service"].status is MigrationStatus.SUCCEEDED
    assert records["auth-service"].status is MigrationStatus.FAILED
    assert records["auth-service"].attempts == 0, "the call never reached the service"
    assert records["auth-service"].last_error == never_taken
    assert auth[0].calls_for(request.id) == []

    async with running_worker(temporal_client, settings):
        decision = await gateway.request_retry(request.id, "operator")
        assert decision is not None
        assert decision.accepted
        final = await temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        ).result()

    assert final.status is TenantStatus.ACTIVE
    assert len(auth[0].calls_for(request.id)) == 1
    assert len(backend[0].calls_for(request.id)) == 1, "the succeeded service is not called again"
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE


async def test_the_reconciler_reports_a_call_waiting_on_a_queue_no_worker_polls(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> None:
    # The default bound (minutes): the call is still waiting when the reconciler looks. The
    # backend's call waits too, in its retry backoff on a queue a worker polls: not reported.
    settings = make_settings(
        ("backend-service", backend[1]),
        ("auth-service", auth[1]),
        migration_initial_interval=timedelta(minutes=5),
        migration_max_interval=timedelta(minutes=5),
        # A rate on the services' queues: every call goes through its queue (no local first
        # attempt), so the backend's retry waits on its queue, where the check sees it.
        migration_queue_activities_per_second=100.0,
    )
    prefix = f"uq{uuid.uuid4().hex[:6]}_"
    request = spec(f"{prefix}waits")
    backend[0].script(request.id, 503, 200)
    gateway = WorkflowGateway(temporal_client, settings)
    handle = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
    check = Reconciler(
        tenants,
        temporal_client,
        servers=settings.storage_fleet(),
        task_queue=settings.task_queue,
        id_prefix=prefix,
    )

    async def backend_in_backoff() -> bool:
        description = await handle.describe()
        return any(
            p.activity_options.task_queue.name
            == migration_task_queue(settings.task_queue, "backend-service")
            and p.state is PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            and p.attempt == 2
            for p in description.raw_description.pending_activities
        )

    async with worker_not_polling(temporal_client, settings, "auth-service") as queue:
        await gateway.provision(request)
        await eventually(backend_in_backoff, bool)
        report = await eventually(check.run, lambda r: bool(unpolled(r)))
        assert await backend_in_backoff(), "the backend's wait was there when the check ran"
        repaired = await check.run(repair=True, actor="test")

    (drift,) = unpolled(report)
    assert drift.tenant_id == request.id
    assert drift.detail.startswith(f"no worker polls queue {queue} for service auth-service")
    assert [d.kind for d in report.drift] == [UNPOLLED], "nothing else is drifted"
    (still,) = unpolled(repaired)
    assert not still.repaired, "report only: a repair is a worker that polls the queue"
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.MIGRATING

    async with running_worker(temporal_client, settings):

        async def auth_called() -> bool:
            return bool(auth[0].calls_for(request.id))

        await eventually(auth_called, bool)
        clean = await eventually(check.run, lambda r: not r.drift)
        assert clean.drift == []
        await handle.terminate("test done")


async def test_a_service_removed_on_purpose_is_left_behind_by_cancel_then_retry(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> None:
    # The run's plan has auth-service; the workers deployed since do not (deploying a worker
    # change, docs/development/workflows.md): cancelling the run and retry-migration calls
    # only today's services.
    planned = make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))
    today = planned.model_copy(update={"downstream_services": planned.downstream_services[:1]})
    request = spec(unique_id("uq"))
    workflow_id = provision_workflow_id(request.id)
    handle = temporal_client.get_workflow_handle_for(ProvisionTenantWorkflow.run, workflow_id)

    async def auth_waits() -> bool:
        state = await handle.query(ProvisionTenantWorkflow.get_status)
        return state.services["auth-service"].status is MigrationStatus.RUNNING and (
            state.services["backend-service"].status is MigrationStatus.SUCCEEDED
        )

    async with worker_not_polling(temporal_client, planned, "auth-service"):
        await WorkflowGateway(temporal_client, planned).provision(request)
        await eventually(auth_waits, bool)
        await WorkflowGateway(temporal_client, planned).cancel(workflow_id)
        cancelled = await eventually(
            lambda: tenants.get(request.id),
            lambda t: t is not None and t.status is TenantStatus.MIGRATION_ERROR,
        )
    assert cancelled is not None

    async with running_worker(temporal_client, today):
        await WorkflowGateway(temporal_client, today).adopt(
            cancelled, "operator", "retry-migration"
        )
        final = await handle.result()

    assert final.status is TenantStatus.ACTIVE
    assert set(final.services) == {"backend-service"}
    assert auth[0].calls_for(request.id) == []
    assert len(backend[0].calls_for(request.id)) == 1
