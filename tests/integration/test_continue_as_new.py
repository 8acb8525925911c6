"""A run waiting in MIGRATION_ERROR keeps its history bounded: it continues as new when the
server suggests it, carrying what is done, and still reaches ACTIVE once the service is fixed.

The server here suggests continue-as-new after a few dozen events (the default is thousands),
so that automation retrying against a service that always answers 400 reaches it in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra import search_attributes as sa
from infra.db.repository import TenantRepository
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.short_history import SUGGEST_AFTER_EVENTS
from workflows.provision.contracts import ProvisionState
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _waiting_in_cycle(cycle: int, state: ProvisionState) -> bool:
    return state.status is TenantStatus.MIGRATION_ERROR and state.retry_cycle == cycle


async def runs_of(client: Client, tenant_id: str) -> list[Any]:
    query = f"WorkflowId = '{provision_workflow_id(tenant_id)}'"
    return [execution async for execution in client.list_workflows(query)]


async def test_waiting_run_continues_as_new_then_reaches_active_once_fixed(
    short_history_client: Client,
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, ScriptedService, str, str],
    tenants: TenantRepository,
) -> None:
    backend, auth, backend_url, auth_url = services
    client = short_history_client
    settings = make_settings(
        ("backend-service", backend_url),
        ("auth-service", auth_url),
        temporal_address=client.service_client.config.target_host,
    )
    request = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    auth.script(request.id, 400)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    async with running_worker(client, settings):
        await WorkflowGateway(client, settings).provision(request)
        first_run = (await handle.describe()).run_id
        retries = 0
        # Automation retrying against a service that always answers 400, until the run has
        # continued as new (the query answers from the latest run, continued or not).
        while True:
            await eventually(
                lambda: handle.query(ProvisionTenantWorkflow.get_status),
                partial(_waiting_in_cycle, retries),
            )
            if (await handle.describe()).run_id != first_run:
                break
            assert retries < 40, "the run never continued as new"
            await handle.signal(ProvisionTenantWorkflow.retry_migration)
            retries += 1
        continued = await handle.query(ProvisionTenantWorkflow.get_status)
        assert continued.status is TenantStatus.MIGRATION_ERROR
        assert continued.services["backend-service"].status is MigrationStatus.SUCCEEDED
        assert continued.storage is not None
        # Visibility follows the continued run a moment later.
        await eventually(
            handle.describe,
            lambda d: d.typed_search_attributes.get(sa.TENANT_STATUS) == "MIGRATION_ERROR",
        )

        auth.script(request.id, 200)
        await handle.signal(ProvisionTenantWorkflow.retry_migration)
        final = await handle.result()

    assert final.status is TenantStatus.ACTIVE
    assert len(backend.calls_for(request.id)) == 1, "a continued run must not redo what is done"
    assert len(auth.calls_for(request.id)) == retries + 2
    runs = await runs_of(client, request.id)
    histories = [
        await client.get_workflow_handle(r.id, run_id=r.run_id).fetch_history() for r in runs
    ]
    assert len(runs) >= 2
    assert any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        for h in histories
        for e in h.events
    )
    # Bounded: no run grows far past the point where the server suggested continuing.
    assert max(len(h.events) for h in histories) < SUGGEST_AFTER_EVENTS + 40
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.workflow_run_id == (await handle.describe()).run_id
    adopted = [e for e in await tenants.events(request.id) if e.action is EventAction.RUN_ADOPTED]
    assert adopted
    assert all(e.actor == f"workflow:{provision_workflow_id(request.id)}" for e in adopted)
