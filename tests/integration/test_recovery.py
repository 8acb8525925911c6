"""Every error status has a way out: retry-provisioning, retry-migration of a closed run,
adoption by compare-and-set, cancellation that stops, and one retry of many requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from api.gateway import WorkflowGateway
from infra import search_attributes as sa
from infra.db.repository import Adoption, TenantOwnedElsewhere, TenantRepository
from infra.db.servers import ServerRepository
from reconciliation import DriftKind, Reconciler
from tenancy.failures import FailureType
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.integration.test_api import api_stack, body, token_for, wait_status
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def restricted_storage(storage_db_url: str) -> str:
    """The storage URL as a role that may not create schemas or databases."""
    role = unique_id("nocreate")
    with psycopg.connect(storage_db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB").format(sql.Identifier(role))
        )
    return storage_db_url.replace("://postgres@", f"://{role}@", 1)


async def actions(tenants: TenantRepository, tenant_id: str) -> list[tuple[EventAction, str]]:
    return [(e.action, e.actor) for e in await tenants.events(tenant_id)]


async def test_retry_provisioning_adopts_a_failed_tenant_and_reaches_active(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    keys_dir: Path,
) -> None:
    services = (("backend-service", backend[1]), ("auth-service", auth[1]))
    broken = make_settings(*services, storage_database_url=restricted_storage(storage_db_url))
    tenant_id = unique_id()
    async with api_stack(temporal_client, broken, token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        failed = await wait_status(api, tenant_id, "PROVISION_ERROR")
        assert "permission denied" in failed["statusReason"]
        # Nothing but retry-provisioning leads out of PROVISION_ERROR.
        assert (await api.post(f"/api/tenants/{tenant_id}/retry-migration")).status_code == 409
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 409

    fixed = make_settings(*services)
    async with api_stack(temporal_client, fixed, token_for(keys_dir, "alice")) as api:
        answer = await api.post(f"/api/tenants/{tenant_id}/retry-provisioning")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] in {"PROVISIONING", "MIGRATING", "ACTIVE"}
        assert answer.json()["workflowRunId"] != failed["workflowRunId"]
        active = await wait_status(api, tenant_id, "ACTIVE")
        again = await api.post(f"/api/tenants/{tenant_id}/retry-provisioning")
        assert again.status_code == 409

    assert active["jdbcUrl"].endswith(f"currentSchema=tenant_{tenant_id}")
    trail = await tenants.events(tenant_id)
    adopted = [e for e in trail if e.action is EventAction.RUN_ADOPTED]
    assert [e.actor for e in adopted] == ["alice"]
    assert adopted[0].reason is not None
    assert failed["workflowRunId"] in adopted[0].reason
    restart = next(e for e in trail if e.new_status is TenantStatus.PROVISIONING and e.old_status)
    assert restart.old_status is TenantStatus.PROVISION_ERROR
    assert restart.actor == "alice"
    assert (EventAction.RETRY_REQUESTED, "alice") in await actions(tenants, tenant_id)


async def test_retry_migration_of_a_closed_run_starts_a_run_that_adopts_the_tenant(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script(tenant_id, 400, 200)
    async with api_stack(temporal_client, settings, token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        before = await wait_status(api, tenant_id, "MIGRATION_ERROR")
        await temporal_client.get_workflow_handle(provision_workflow_id(tenant_id)).terminate(
            "lost run"
        )

        answer = await api.post(f"/api/tenants/{tenant_id}/retry-migration")
        assert answer.status_code == 202, answer.text
        await wait_status(api, tenant_id, "ACTIVE")

    tenant = await tenants.get(tenant_id)
    assert tenant is not None
    assert tenant.workflow_run_id != before["workflowRunId"]
    assert len(backend[0].calls_for(tenant_id)) == 1, "the succeeded service must not re-run"
    assert len(auth[0].calls_for(tenant_id)) == 2
    assert (EventAction.RUN_ADOPTED, "operator") in await actions(tenants, tenant_id)


async def test_of_fifty_concurrent_retries_exactly_one_is_taken(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    # The retry's call fails retryably and its next attempt is far off, so the retry is still
    # running while the fifty requests arrive.
    auth[0].script(tenant_id, 400, 503)
    slow = settings.model_copy(
        update={
            "migration_initial_interval": timedelta(seconds=30),
            "migration_max_interval": timedelta(seconds=30),
        }
    )
    async with api_stack(temporal_client, slow, token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "MIGRATION_ERROR")
        url = f"/api/tenants/{tenant_id}/retry-migration"
        answers = await asyncio.gather(*(api.post(url) for _ in range(50)))
        await eventually(lambda: asyncio.sleep(0, auth[0].calls_for(tenant_id)), _two)
        await temporal_client.get_workflow_handle(provision_workflow_id(tenant_id)).terminate(
            "done"
        )

    assert sorted(a.status_code for a in answers) == [202] + [409] * 49
    refused = [a for a in answers if a.status_code == 409]
    assert all(a.headers["content-type"] == "application/problem+json" for a in refused)
    trail = await tenants.events(tenant_id)
    retries = [e for e in trail if e.action is EventAction.RETRY_REQUESTED]
    assert len(retries) == 1, [(e.occurred_at, e.actor, e.reason) for e in trail]
    assert len(auth[0].calls_for(tenant_id)) == 2


def _two(calls: list[Any]) -> bool:
    return len(calls) == 2


async def test_cancelling_a_migrating_run_stops_it_in_migration_error_and_retry_recovers(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    auth: tuple[ScriptedService, str],
    keys_dir: Path,
) -> None:
    tenant_id = unique_id()
    auth[0].script(tenant_id, 503, 200)
    slow = settings.model_copy(
        update={"migration_initial_interval": settings.migration_max_interval * 50}
    )
    slow = slow.model_copy(update={"migration_max_interval": slow.migration_initial_interval})
    async with api_stack(temporal_client, slow, token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await eventually(lambda: asyncio.sleep(0, auth[0].calls_for(tenant_id)), bool)
        handle = temporal_client.get_workflow_handle(provision_workflow_id(tenant_id))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
        assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
        tenant = await wait_status(api, tenant_id, "MIGRATION_ERROR")
        assert tenant["statusReason"] == "provisioning run cancelled"

    assert "cancel" in str(ended.value.cause).lower()
    async with api_stack(temporal_client, settings, token_for(keys_dir)) as api:
        assert (await api.post(f"/api/tenants/{tenant_id}/retry-migration")).status_code == 202
        await wait_status(api, tenant_id, "ACTIVE")


async def test_cancelling_a_run_waiting_in_migration_error_ends_it_cancelled(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    auth: tuple[ScriptedService, str],
) -> None:
    request = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    auth[0].script(request.id, 400)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        await eventually(
            lambda: tenants.get(request.id),
            lambda t: t is not None and t.status is TenantStatus.MIGRATION_ERROR,
        )
        handle = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        description = await handle.describe()

    assert description.status is WorkflowExecutionStatus.CANCELED
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.MIGRATION_ERROR
    assert tenant.status_reason == "migration failed for: auth-service"


async def test_a_definite_metadata_error_fails_the_run_at_once_and_burns_no_id(
    temporal_client: Client, settings: Settings, tenants: TenantRepository
) -> None:
    request = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    gateway = WorkflowGateway(temporal_client, settings)
    async with running_worker(temporal_client, settings):
        # A NUL byte is refused by PostgreSQL on every attempt (DataError): not retried.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await gateway.provision(request, requested_by="bad\x00subject")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == FailureType.METADATA_REJECTED
        assert await tenants.get(request.id) is None
        state = await gateway.provision(request, requested_by="operator")
        final = await temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        ).result()

    assert state.recorded
    assert final.status is TenantStatus.ACTIVE


async def test_a_refused_duplicate_run_never_writes_the_tenant_status_attribute(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    tenants: TenantRepository,
    storage_db_url: str,
) -> None:
    broken = make_settings(
        ("backend-service", backend[1]), storage_database_url=restricted_storage(storage_db_url)
    )
    request = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    gateway = WorkflowGateway(temporal_client, broken)
    async with running_worker(temporal_client, broken):
        await gateway.provision(request)
        handle = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        first_run = (await handle.describe()).run_id
        with pytest.raises(Exception, match="already exists"):
            await gateway.provision(request)
        duplicate = temporal_client.get_workflow_handle(provision_workflow_id(request.id))
        with pytest.raises(WorkflowFailureError) as refused:
            await duplicate.result()
        description = await duplicate.describe()

    assert description.run_id != first_run
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == FailureType.TENANT_EXISTS
    assert description.typed_search_attributes.get(sa.TENANT_STATUS) is None
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.PROVISION_ERROR
    assert tenant.workflow_run_id == first_run


async def test_adoption_is_a_compare_and_set_on_the_owning_run(
    tenants: TenantRepository,
) -> None:
    spec = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    wf = provision_workflow_id(spec.id)
    await tenants.insert(spec, wf, "run-1", ["backend-service"], "operator")
    takeover = Adoption(replaces_run_id="run-1", actor="alice", reason="retry-migration")

    adopted = await tenants.insert(spec, wf, "run-2", ["backend-service"], None, takeover)
    with pytest.raises(TenantOwnedElsewhere):
        await tenants.insert(spec, wf, "run-3", ["backend-service"], None, takeover)
    with pytest.raises(TenantOwnedElsewhere):
        await tenants.insert(spec, wf, "run-4", ["backend-service"], "operator")
    again = await tenants.insert(spec, wf, "run-2", ["backend-service"], None, takeover)

    assert adopted.workflow_run_id == again.workflow_run_id == "run-2"
    events = await tenants.events(spec.id)
    assert [e.action for e in events] == [EventAction.CREATED, EventAction.RUN_ADOPTED]
    assert adopted.migrations[0].status is MigrationStatus.PENDING


async def test_retries_answer_404_for_an_unknown_tenant_and_409_for_an_active_one(
    temporal_client: Client, settings: Settings, keys_dir: Path
) -> None:
    tenant_id = unique_id()
    async with api_stack(temporal_client, settings, token_for(keys_dir)) as api:
        assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        await wait_status(api, tenant_id, "ACTIVE")
        for path in ("retry-provisioning", "retry-migration"):
            unknown = await api.post(f"/api/tenants/{unique_id()}/{path}")
            active = await api.post(f"/api/tenants/{tenant_id}/{path}")
            assert unknown.status_code == 404
            assert active.status_code == 409
            assert active.json()["tenantStatus"] == "ACTIVE"


async def test_reconciler_restarts_through_adoption_and_reports_storage_of_failed_tenants(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    servers: ServerRepository,
) -> None:
    prefix = f"{unique_id('rr')}_"
    stuck, failed = f"{prefix}stuck", f"{prefix}failed"
    for tenant_id in (stuck, failed):
        spec = TenantSpec(
            id=tenant_id, name="Drift", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
        )
        await tenants.insert(
            spec, provision_workflow_id(tenant_id), "lost-run", ["backend-service"]
        )
        # Placed, as provisioning places a tenant before its storage is created.
        await servers.place(tenant_id, settings.storage_fleet(), settings.placement_map())
        # As the platform's role, which owns what it creates (and so can grant on it).
        with psycopg.connect(settings.require_storage_database_url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"tenant_{tenant_id}")))
    await tenants.transition(failed, TenantStatus.PROVISION_ERROR, "disk full", "test")
    check = Reconciler(
        tenants,
        temporal_client,
        servers=settings.storage_fleet(),
        task_queue=settings.task_queue,
        id_prefix=prefix,
    )
    async with running_worker(temporal_client, settings):
        report = await check.run(repair=True, actor="alice")
        await eventually(
            lambda: tenants.get(stuck),
            lambda t: t is not None and t.status is TenantStatus.ACTIVE,
        )

    assert {(d.kind, d.tenant_id, d.repaired) for d in report.drift} == {
        (DriftKind.STUCK_WITHOUT_WORKFLOW, stuck, True),
        (DriftKind.FAILED_TENANT_STORAGE, failed, False),
    }
    adopted = [e for e in await tenants.events(stuck) if e.action is EventAction.RUN_ADOPTED]
    assert [e.actor for e in adopted] == ["reconciler:alice"]
    assert (await tenants.get(failed)).status is TenantStatus.PROVISION_ERROR  # type: ignore[union-attr]
