"""ProvisionTenantWorkflow against a real Temporal server, real PostgreSQL and real HTTP
downstream services whose answers each test scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from api.gateway import WorkflowGateway
from infra import search_attributes as sa
from infra.db.repository import TenantRepository
from tenancy.failures import FailureType
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec(mode: StorageMode = StorageMode.SCHEMA, **fields: Any) -> TenantSpec:
    return TenantSpec(
        id=fields.pop("id", unique_id()),
        name="Acme Corp",
        storage_mode=mode,
        sla_tier="STANDARD",
        **fields,
    )


async def wait_status(tenants: TenantRepository, tenant_id: str, status: TenantStatus) -> None:
    await eventually(lambda: tenants.get(tenant_id), lambda t: t is not None and t.status is status)


def storage_exists(server_url: str, kind: str, name: str) -> bool:
    query = {
        "schema": "SELECT 1 FROM pg_namespace WHERE nspname = %s",
        "database": "SELECT 1 FROM pg_database WHERE datname = %s",
    }[kind]
    with psycopg.connect(server_url) as conn:
        return conn.execute(query, (name,)).fetchone() is not None


@pytest.mark.parametrize("mode", [StorageMode.SCHEMA, StorageMode.DATABASE])
async def test_happy_path_ends_active_with_storage_and_every_service_migrated(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
    storage_db_url: str,
    mode: StorageMode,
) -> None:
    request = spec(mode)
    async with running_worker(temporal_client, settings):
        recorded = await WorkflowGateway(temporal_client, settings).provision(request)
        assert recorded.recorded
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        final = await handle.result()

    assert final.status is TenantStatus.ACTIVE
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.last_migration_version == {
        "backend-service": "backend-0002",
        "auth-service": "auth-0002",
    }
    assert all(m.attempts == 1 for m in tenant.migrations)
    name = f"tenant_{request.id}"
    if mode is StorageMode.SCHEMA:
        assert tenant.jdbc_url is not None
        assert tenant.jdbc_url.endswith(f"?currentSchema={name}")
        assert storage_exists(storage_db_url, "schema", name)
    else:
        assert tenant.jdbc_url is not None
        assert tenant.jdbc_url.endswith(f"/{name}")
        assert storage_exists(storage_db_url, "database", name)
    for service in (backend[0], auth[0]):
        (call,) = service.calls_for(request.id)
        assert call.body["storageMode"] == mode.value
        assert call.idempotency_key
    description = await handle.describe()
    attrs = description.typed_search_attributes
    assert attrs.get(sa.TENANT_STATUS) == "ACTIVE"
    assert attrs.get(sa.TENANT_ID) == request.id
    assert attrs.get(sa.STORAGE_MODE) == mode.value
    assert attrs.get(sa.SLA_TIER) == "STANDARD"


async def test_server_error_then_success_retries_with_the_same_idempotency_key(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    request = spec()
    backend[0].script(request.id, 503, 500, 200)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        final = await temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        ).result()

    assert final.status is TenantStatus.ACTIVE
    calls = backend[0].calls_for(request.id)
    assert len(calls) == 3
    assert len({c.idempotency_key for c in calls}) == 1
    tenant = await tenants.get(request.id)
    assert tenant is not None
    record = next(m for m in tenant.migrations if m.service == "backend-service")
    assert record.attempts == 3
    assert record.status is MigrationStatus.SUCCEEDED
    assert record.last_error is None


async def test_client_error_waits_for_signal_and_reruns_only_the_failed_service(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> None:
    request = spec()
    auth[0].script(request.id, 400, 200)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        await wait_status(tenants, request.id, TenantStatus.MIGRATION_ERROR)

        tenant = await tenants.get(request.id)
        assert tenant is not None
        failed = next(m for m in tenant.migrations if m.service == "auth-service")
        assert failed.status is MigrationStatus.FAILED
        assert failed.attempts == 1, "a 400 must not be retried"
        assert failed.last_error is not None
        assert "HTTP 400" in failed.last_error
        state = await handle.query(ProvisionTenantWorkflow.get_status)
        assert state.status is TenantStatus.MIGRATION_ERROR
        assert state.services["auth-service"].status is MigrationStatus.FAILED
        description = await handle.describe()
        assert description.typed_search_attributes.get(sa.TENANT_STATUS) == "MIGRATION_ERROR"

        await handle.signal(ProvisionTenantWorkflow.retry_migration)
        final = await handle.result()

    assert final.status is TenantStatus.ACTIVE
    assert final.retry_cycle == 1
    assert len(backend[0].calls_for(request.id)) == 1, "the succeeded service must not re-run"
    auth_calls = auth[0].calls_for(request.id)
    assert len(auth_calls) == 2
    assert auth_calls[0].idempotency_key != auth_calls[1].idempotency_key
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert {m.service: m.status for m in tenant.migrations} == {
        "auth-service": MigrationStatus.SUCCEEDED,
        "backend-service": MigrationStatus.SUCCEEDED,
    }


async def test_exhausted_retries_end_in_migration_error(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    request = spec()
    backend[0].script(request.id, 503)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        await wait_status(tenants, request.id, TenantStatus.MIGRATION_ERROR)
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        await handle.terminate("test done")

    assert len(backend[0].calls_for(request.id)) == settings.migration_max_attempts
    tenant = await tenants.get(request.id)
    assert tenant is not None
    record = next(m for m in tenant.migrations if m.service == "backend-service")
    assert record.status is MigrationStatus.FAILED
    assert record.attempts == settings.migration_max_attempts
    assert record.last_error is not None
    assert "HTTP 503" in record.last_error
    assert tenant.status_reason == "migration failed for: backend-service"


async def test_unreachable_service_is_retried_then_reported(
    temporal_client: Client, make_settings: Callable[..., Settings], tenants: TenantRepository
) -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(("ghost-service", nothing_listens), migration_max_attempts=2)
    request = spec()
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        await wait_status(tenants, request.id, TenantStatus.MIGRATION_ERROR)
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        await handle.terminate("test done")
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert record.attempts == 2
    assert record.last_error == "cannot reach ghost-service: ConnectError"


async def test_storage_permission_denied_ends_in_provision_error(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    storage_db_url: str,
    backend: tuple[ScriptedService, str],
) -> None:
    role = unique_id("nocreate")
    with psycopg.connect(storage_db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB").format(sql.Identifier(role))
        )
    restricted = storage_db_url.replace("://postgres@", f"://{role}@", 1)
    settings = make_settings(("backend-service", backend[1]), storage_database_url=restricted)
    request = spec()
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == FailureType.PROVISION_FAILED
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.PROVISION_ERROR
    assert tenant.status_reason is not None
    assert "permission denied" in tenant.status_reason
    assert tenant.jdbc_url is None
    assert not storage_exists(storage_db_url, "schema", f"tenant_{request.id}")
    assert backend[0].calls_for(request.id) == []
    description = await handle.describe()
    assert description.typed_search_attributes.get(sa.TENANT_STATUS) == "PROVISION_ERROR"


async def test_retry_signal_outside_migration_error_is_ignored(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    request = spec()
    # Signalled while PROVISIONING, before any worker runs it: the run sees the signal in its
    # first task (a healthy run is otherwise done within that task, too soon to signal).
    await WorkflowGateway(temporal_client, settings).create(request, tenants)
    handle = temporal_client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    await handle.signal(ProvisionTenantWorkflow.retry_migration)
    async with running_worker(temporal_client, settings):
        final = await handle.result()
    assert final.status is TenantStatus.ACTIVE
    assert final.retry_cycle == 0
    assert len(backend[0].calls_for(request.id)) == 1
