"""A deletion waiting in DELETION_ERROR keeps its history bounded: it continues as new when the
server suggests it, the new run takes the deletion over from the row (still waiting for
retry-deletion, the services done not asked again, the same idempotency key) and reaches
DELETED once the service is fixed.

The server here suggests continue-as-new after a few dozen events (the default is thousands),
so that retries against a service that always answers 400 reach it in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import deletion_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.short_history import SUGGEST_AFTER_EVENTS
from workflows.delete.contracts import RETRY_SIGNAL, STATUS_QUERY, DeletionState

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _waiting(first_run: str | None, cycle: int, seen: tuple[str | None, DeletionState]) -> bool:
    """Waiting in DELETION_ERROR after `cycle` retries, or already continued as new."""
    run_id, state = seen
    return state.status is TenantStatus.DELETION_ERROR and (
        run_id != first_run or state.retry_cycle == cycle
    )


async def _teardowns(service: ScriptedService, tenant_id: str) -> int:
    return len(service.teardowns_for(tenant_id))


async def test_deletion_waiting_in_error_continues_as_new_then_deletes_once_fixed(
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
    tenant_id = unique_id()
    auth.script_teardown(tenant_id, 400)
    handle = client.get_workflow_handle(deletion_workflow_id(tenant_id), result_type=DeletionState)
    gateway = WorkflowGateway(client, settings)

    async def where() -> tuple[str | None, DeletionState]:
        run_id = (await handle.describe()).run_id
        state: DeletionState = await handle.query(STATUS_QUERY, result_type=DeletionState)
        return run_id, state

    async with running_worker(client, settings):
        await gateway.provision(
            TenantSpec(
                id=tenant_id, name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
            )
        )
        await eventually(
            lambda: tenants.get(tenant_id),
            lambda t: t is not None and t.status is TenantStatus.ACTIVE,
        )
        await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
        first_run, _ = await eventually(where, lambda w: w[1].status is TenantStatus.DELETION_ERROR)
        retries = 0
        # Automation retrying against a service that always answers 400, until the run has
        # continued as new (the query answers from the latest run).
        while True:
            run_id, state = await eventually(where, partial(_waiting, first_run, retries))
            if run_id != first_run:
                break
            assert retries < 40, "the run never continued as new"
            await handle.signal(RETRY_SIGNAL)
            retries += 1
        # Every retry asked is answered by one call, also one signalled while the run
        # continued as new (the new run takes it as its own).
        await eventually(lambda: _teardowns(auth, tenant_id), lambda n: n == retries + 1)
        run_id, state = await eventually(
            where, lambda w: w[1].status is TenantStatus.DELETION_ERROR
        )
        calls_when_continued = len(auth.teardowns_for(tenant_id))
        # The continued run took the deletion over and waits: it does not retry by itself.
        assert run_id != first_run
        assert state.services.get("backend-service") == "DONE"
        assert state.requested_at is not None

        auth.script_teardown(tenant_id, 200)
        await handle.signal(RETRY_SIGNAL)
        final = await handle.result()

    assert final.status is TenantStatus.DELETED
    assert retries >= 1, "the first run retried before it continued as new"
    assert calls_when_continued == retries + 1
    assert len(backend.teardowns_for(tenant_id)) == 1, "a continued run must not redo what is done"
    keys = {call.idempotency_key for call in auth.teardowns_for(tenant_id)}
    assert len(auth.teardowns_for(tenant_id)) == retries + 2
    assert len(keys) == 1, keys
    runs = [
        execution
        async for execution in client.list_workflows(
            f"WorkflowId = '{deletion_workflow_id(tenant_id)}'"
        )
    ]
    histories = [
        await client.get_workflow_handle(r.id, run_id=r.run_id).fetch_history() for r in runs
    ]
    assert len(runs) >= 2
    assert any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        for h in histories
        for e in h.events
    )
    assert max(len(h.events) for h in histories) < SUGGEST_AFTER_EVENTS + 40
    tenant = await tenants.get(tenant_id)
    assert tenant is not None
    assert tenant.status is TenantStatus.DELETED
    to_deleted = [
        e
        for e in await tenants.events(tenant_id)
        if e.action is EventAction.STATUS_CHANGED and e.new_status is TenantStatus.DELETED
    ]
    assert len(to_deleted) == 1
