"""The reconciler and deletions, for real: storage left behind by a DELETED tenant is drift
(STORAGE_NOT_DROPPED, left in place), and a tenant in a deletion status whose run is gone is
STUCK_WITHOUT_WORKFLOW, which repair resumes from where the row says the deletion stands.

Each test reconciles only its own tenant-id prefix (the session's databases are shared)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from reconciliation import DriftKind, Reconciler, ReconciliationReport
from tenancy.models import EventAction, StorageMode, TenantSpec
from tenancy.naming import deletion_workflow_id, storage_name
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker
from tests.faults.downstream import Gate
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from workflows.delete.contracts import RETRY_SIGNAL, STATUS_QUERY, WORKFLOW_NAME, DeletionState
from workflows.delete.starts import resumption

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
HOUR = 3600


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]]]:
    """Both scripted services; the auth service behind a gate that can hold its teardowns."""
    backend, auth, gate = (
        ScriptedService(version="backend-1"),
        ScriptedService(version="auth-1"),
        Gate(),
    )
    with serve(backend.app()) as backend_url, serve(gate.wrap(auth.app())) as auth_url:
        yield backend, auth, gate, [("backend-service", backend_url), ("auth-service", auth_url)]


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]],
) -> Settings:
    return make_settings(*services[3])


@pytest_asyncio.fixture(loop_scope="session")
async def worker(temporal_client: Client, settings: Settings) -> AsyncIterator[None]:
    async with running_worker(temporal_client, settings):
        yield


def prefix() -> str:
    return f"rd{uuid.uuid4().hex[:6]}_"


def reconciler(
    tenants: TenantRepository, client: Client, settings: Settings, ids: str
) -> Reconciler:
    return Reconciler(
        tenants,
        client,
        servers=settings.storage_fleet(),
        task_queue=settings.task_queue,
        id_prefix=ids,
    )


def spec(tenant_id: str) -> TenantSpec:
    return TenantSpec(
        id=tenant_id, name="Offboard Corp", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )


def execute(url: str, statement: sql.SQL | sql.Composed, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def schema_exists(url: str, tenant_id: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (storage_name(tenant_id),)
        ).fetchone()
    return row is not None


def kinds(report: ReconciliationReport) -> set[tuple[DriftKind, str | None]]:
    return {(d.kind, d.tenant_id) for d in report.drift}


async def wait_status(tenants: TenantRepository, tenant_id: str, status: TenantStatus) -> None:
    await eventually(
        lambda: tenants.get(tenant_id), lambda t: t is not None and t.status is status, timeout=60
    )


async def active(gateway: WorkflowGateway, tenants: TenantRepository, tenant_id: str) -> None:
    await gateway.provision(spec(tenant_id))
    await wait_status(tenants, tenant_id, TenantStatus.ACTIVE)


async def terminate_deletion(client: Client, tenant_id: str) -> None:
    """End the tenant's deletion run behind the platform's back (a lost run)."""
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id))
    await handle.terminate("lost in a test")
    await eventually(handle.describe, lambda d: d.status is WorkflowExecutionStatus.TERMINATED)


def deletion_handle(client: Client, tenant_id: str) -> WorkflowHandle[object, DeletionState]:
    return client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)


async def live_status(client: Client, tenant_id: str) -> TenantStatus | None:
    """The status the latest deletion run reports, once it is running (else None)."""
    handle = deletion_handle(client, tenant_id)
    if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
        return None
    state: DeletionState = await handle.query(STATUS_QUERY, result_type=DeletionState)
    return state.status


async def test_storage_of_a_deleted_tenant_is_reported_and_left_in_place(
    temporal_client: Client, settings: Settings, tenants: TenantRepository, worker: None
) -> None:
    ids = prefix()
    tenant_id = f"{ids}gone"
    gateway = WorkflowGateway(temporal_client, settings)
    await active(gateway, tenants, tenant_id)
    await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
    await wait_status(tenants, tenant_id, TenantStatus.DELETED)
    check = reconciler(tenants, temporal_client, settings, ids)
    clean = await eventually(check.run, lambda r: not r.drift)
    storage_url = settings.require_storage_database_url()
    # Something re-created the schema after the purge.
    execute(
        storage_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(storage_name(tenant_id)))
    )

    report = await check.run(repair=True)

    assert clean.drift == []
    (drift,) = report.drift
    assert drift.kind is DriftKind.STORAGE_NOT_DROPPED
    assert drift.tenant_id == tenant_id
    assert drift.server == "default"
    assert (
        drift.detail
        == f"schema {storage_name(tenant_id)} on server default exists, tenant is DELETED "
        "(left in place)"
    )
    assert not drift.repaired
    assert schema_exists(storage_url, tenant_id)
    tenant = await tenants.get(tenant_id)
    assert tenant is not None
    assert tenant.status is TenantStatus.DELETED


async def test_lost_scheduled_deletions_are_resumed_waiting_or_purged_by_their_purge_time(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    services: tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]],
    worker: None,
) -> None:
    ids = prefix()
    waiting, overdue = f"{ids}waiting", f"{ids}overdue"
    gateway = WorkflowGateway(temporal_client, settings)
    for tenant_id in (waiting, overdue):
        await active(gateway, tenants, tenant_id)
        await gateway.schedule_deletion(tenant_id, "olivia", "churned", HOUR)
        await terminate_deletion(temporal_client, tenant_id)
    before = await tenants.get(waiting)
    assert before is not None
    assert before.deletion is not None
    # The overdue one's grace period ended while no run was there to notice.
    execute(
        settings.require_database_url(),
        sql.SQL("UPDATE tenants SET deletion_purge_at = %s WHERE id = %s"),
        (datetime.now(UTC) - timedelta(minutes=5), overdue),
    )
    check = reconciler(tenants, temporal_client, settings, ids)

    report = await check.run()
    repaired = await check.run(repair=True, actor="carol")

    expected = {(DriftKind.STUCK_WITHOUT_WORKFLOW, t) for t in (waiting, overdue)}
    assert kinds(report) == expected
    details = {d.tenant_id: d.detail for d in report.drift}
    assert details[waiting] == "tenant is DELETION_SCHEDULED, its workflow is terminated"
    assert not any(d.repaired for d in report.drift)
    assert {(d.kind, d.tenant_id) for d in repaired.drift if d.repaired} == expected
    await wait_status(tenants, overdue, TenantStatus.DELETED)
    storage_url = settings.require_storage_database_url()
    assert not schema_exists(storage_url, overdue)
    # The other one's purge time is an hour away: a run waits it out, nothing dropped.
    assert await eventually(
        lambda: live_status(temporal_client, waiting),
        lambda s: s is TenantStatus.DELETION_SCHEDULED,
    )
    state = await deletion_handle(temporal_client, waiting).query(
        STATUS_QUERY, result_type=DeletionState
    )
    assert state.purge_at == before.deletion.purge_at
    assert schema_exists(storage_url, waiting)
    backend = services[0]
    assert backend.teardowns_for(waiting) == []
    assert len(backend.teardowns_for(overdue)) == 1
    after = await tenants.get(waiting)
    assert after is not None
    assert after.status is TenantStatus.DELETION_SCHEDULED
    assert await eventually(check.run, lambda r: not r.drift)
    await deletion_handle(temporal_client, waiting).terminate("test done")


async def test_a_lost_purge_is_resumed_and_repeats_the_teardown_with_the_same_key(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    services: tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]],
    worker: None,
) -> None:
    ids = prefix()
    tenant_id = f"{ids}purging"
    backend, auth, gate, _ = services
    gateway = WorkflowGateway(temporal_client, settings)
    await active(gateway, tenants, tenant_id)
    # The held call answers 503 once it gets through: its run is gone by then, so nothing
    # retries it and nothing records it done; the next call succeeds.
    auth.script_teardown(tenant_id, 503, 200)
    gate.close([tenant_id])
    try:
        await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
        await eventually(lambda: _held(gate, tenant_id), bool)
        await wait_status(tenants, tenant_id, TenantStatus.DELETING)
        # The backend's teardown done (and recorded on the row) before the run is lost.
        await eventually(
            lambda: deletion_handle(temporal_client, tenant_id).query(
                STATUS_QUERY, result_type=DeletionState
            ),
            lambda s: s.services.get("backend-service") == "DONE",
        )
        await terminate_deletion(temporal_client, tenant_id)
    finally:
        gate.open()
    await eventually(lambda: _teardowns(auth, tenant_id), lambda n: n == 1)
    check = reconciler(tenants, temporal_client, settings, ids)

    report = await check.run(repair=True)

    (drift,) = report.drift
    assert drift.kind is DriftKind.STUCK_WITHOUT_WORKFLOW
    assert drift.detail == "tenant is DELETING, its workflow is terminated"
    assert drift.repaired
    await wait_status(tenants, tenant_id, TenantStatus.DELETED)
    assert not schema_exists(settings.require_storage_database_url(), tenant_id)
    # The backend's teardown was done and recorded before the run was lost: not asked again.
    assert len(backend.teardowns_for(tenant_id)) == 1
    # The auth teardown held at the gate failed after its run was gone; the resumed run asked
    # again, with the same key (the service sees one logical request).
    keys = [call.idempotency_key for call in auth.teardowns_for(tenant_id)]
    assert len(keys) == 2, keys
    assert keys[0]
    assert len(set(keys)) == 1, keys


async def _held(gate: Gate, tenant_id: str) -> bool:
    return gate.held(tenant_id) > 0


async def _teardowns(service: ScriptedService, tenant_id: str) -> int:
    return len(service.teardowns_for(tenant_id))


async def test_a_lost_run_in_deletion_error_is_resumed_to_wait_for_retry_deletion(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    services: tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]],
    worker: None,
) -> None:
    ids = prefix()
    tenant_id = f"{ids}failed"
    backend, auth, _, _ = services
    gateway = WorkflowGateway(temporal_client, settings)
    await active(gateway, tenants, tenant_id)
    auth.script_teardown(tenant_id, 400)
    await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
    await wait_status(tenants, tenant_id, TenantStatus.DELETION_ERROR)
    await terminate_deletion(temporal_client, tenant_id)
    auth_calls = len(auth.teardowns_for(tenant_id))
    check = reconciler(tenants, temporal_client, settings, ids)

    report = await check.run(repair=True, actor="carol")

    (drift,) = report.drift
    assert drift.kind is DriftKind.STUCK_WITHOUT_WORKFLOW
    assert drift.detail == "tenant is DELETION_ERROR, its workflow is terminated"
    assert drift.repaired
    # The resumed run waits in DELETION_ERROR: a failed purge is retried only when asked.
    assert await eventually(
        lambda: live_status(temporal_client, tenant_id),
        lambda s: s is TenantStatus.DELETION_ERROR,
    )
    settled = await eventually(check.run, lambda r: not r.drift)
    assert settled.drift == []
    assert len(auth.teardowns_for(tenant_id)) == auth_calls
    assert schema_exists(settings.require_storage_database_url(), tenant_id)
    waiting = await tenants.get(tenant_id)
    assert waiting is not None
    assert waiting.status is TenantStatus.DELETION_ERROR

    auth.script_teardown(tenant_id, 200)
    await deletion_handle(temporal_client, tenant_id).signal(RETRY_SIGNAL)
    await wait_status(tenants, tenant_id, TenantStatus.DELETED)
    assert not schema_exists(settings.require_storage_database_url(), tenant_id)
    assert len(backend.teardowns_for(tenant_id)) == 1
    to_deleted = [
        e
        for e in await tenants.events(tenant_id)
        if e.action is EventAction.STATUS_CHANGED and e.new_status is TenantStatus.DELETED
    ]
    assert len(to_deleted) == 1


async def test_a_retry_signalled_while_a_resumed_run_takes_over_is_not_lost(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    services: tuple[ScriptedService, ScriptedService, Gate, list[tuple[str, str]]],
    worker: None,
) -> None:
    """A run that takes a deletion over (repair, continue-as-new) reads the row before it knows
    it is in DELETION_ERROR; a `retry_deletion` delivered meanwhile (here with the start, as
    signal-with-start delivers it) must still start the retry."""
    ids = prefix()
    tenant_id = f"{ids}signalled"
    _, auth, _, _ = services
    gateway = WorkflowGateway(temporal_client, settings)
    await active(gateway, tenants, tenant_id)
    auth.script_teardown(tenant_id, 400)
    await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
    await wait_status(tenants, tenant_id, TenantStatus.DELETION_ERROR)
    await terminate_deletion(temporal_client, tenant_id)
    auth.script_teardown(tenant_id, 200)

    handle = await temporal_client.start_workflow(
        WORKFLOW_NAME,
        resumption(tenant_id, "carol", retry=False),
        id=deletion_workflow_id(tenant_id),
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        start_signal=RETRY_SIGNAL,
        result_type=DeletionState,
    )
    final = await asyncio.wait_for(handle.result(), timeout=30)

    assert final.status is TenantStatus.DELETED
    assert not schema_exists(settings.require_storage_database_url(), tenant_id)
