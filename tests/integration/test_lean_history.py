"""The lean history (issue 20): a healthy tenant is provisioned in one workflow task, with the
first attempt of storage and of each migration made locally; a local attempt that fails, or
finds no free slot, hands its call to the regular activity on the service's queue; the run's
TenantStatus search attribute is current whenever the run leaves its task. Real Temporal dev
server, real PostgreSQL, real HTTP services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from api.gateway import WorkflowGateway
from infra import search_attributes as sa
from infra.db.repository import TenantRepository
from tenancy.models import EventAction, StorageMode, TenantSpec
from tenancy.naming import migration_task_queue, provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from workflows.provision.contracts import ProvisionState
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec(tenant_id: str) -> TenantSpec:
    return TenantSpec(
        id=tenant_id, name="Lean Corp", storage_mode=StorageMode.SCHEMA, sla_tier="STANDARD"
    )


def of_type(history: WorkflowHistory, kind: EventType.ValueType) -> int:
    return sum(1 for event in history.events if event.event_type == kind)


async def provisioned(
    client: Client, settings: Settings, tenants: TenantRepository, request: TenantSpec
) -> tuple[WorkflowHandle[Any, ProvisionState], WorkflowHistory]:
    """Create `request` as the API does, with a worker, until its run ends ACTIVE."""
    async with running_worker(client, settings):
        await WorkflowGateway(client, settings).create(request, tenants)
        handle = client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        final = await handle.result()
    assert final.status is TenantStatus.ACTIVE
    return handle, await handle.fetch_history()


def scheduled_queues(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_a_healthy_tenant_is_provisioned_in_one_workflow_task(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> None:
    settings = make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))
    request = spec(unique_id("ln"))
    handle, history = await provisioned(temporal_client, settings, tenants, request)
    # Before: 4 workflow tasks, 3 activities, 6 markers and 6 upserts, 36 events (two services).
    assert of_type(history, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert scheduled_queues(history) == []
    assert of_type(history, EventType.EVENT_TYPE_TIMER_STARTED) == 0
    # The patch marker; the row and plan; storage; one per service.
    assert of_type(history, EventType.EVENT_TYPE_MARKER_RECORDED) == 5
    # TemporalChangeVersion (the patch) and ACTIVE: PROVISIONING and MIGRATING were passed
    # within the task and never shown.
    assert of_type(history, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 2
    # Started, the task's three, five markers, two upserts, completed.
    assert len(history.events) == 12
    description = await handle.describe()
    assert description.typed_search_attributes.get(sa.TENANT_STATUS) == "ACTIVE"
    assert description.typed_search_attributes.get(sa.TENANT_ID) == request.id
    # The row went through every status all the same, and each service was called once.
    trail = await tenants.events(request.id)
    moves = [e.new_status for e in trail if e.action is EventAction.STATUS_CHANGED]
    assert moves == [TenantStatus.MIGRATING, TenantStatus.ACTIVE]
    assert len(backend[0].calls_for(request.id)) == len(auth[0].calls_for(request.id)) == 1


async def test_a_failed_local_attempt_goes_to_the_services_queue_after_the_first_backoff(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    settings = make_settings(
        ("backend-service", backend[1]),
        migration_initial_interval=timedelta(seconds=3),
        migration_max_interval=timedelta(seconds=3),
    )
    request = spec(unique_id("ln"))
    backend[0].script(request.id, 503, 200)
    handle = temporal_client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).create(request, tenants)
        # While the run waits out the backoff, it has left its task: the search attribute
        # shows the status the row is in.
        waiting = await eventually(
            handle.describe,
            lambda d: d.typed_search_attributes.get(sa.TENANT_STATUS) == "MIGRATING",
        )
        row = await tenants.get(request.id)
        assert row is not None
        assert row.status is TenantStatus.MIGRATING
        assert waiting.typed_search_attributes.get(sa.TENANT_STATUS) == "MIGRATING"
        final = await handle.result()
    assert final.status is TenantStatus.ACTIVE
    history = await handle.fetch_history()
    (timer,) = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert timer == timedelta(seconds=3)
    assert scheduled_queues(history) == [
        migration_task_queue(settings.task_queue, "backend-service")
    ]
    calls = backend[0].calls_for(request.id)
    assert len(calls) == 2
    assert calls[0].idempotency_key == calls[1].idempotency_key, "one logical call"
    record = (await tenants.get(request.id)).migrations[0]  # type: ignore[union-attr]
    assert record.attempts == 2


async def test_a_local_attempt_without_a_free_slot_goes_to_the_queue_at_once(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    # One slot per service, which the service's queue worker holds for its poll: every local
    # attempt waits its 2 s for a slot, declines, and the call is made from the queue.
    settings = make_settings(
        ("backend-service", backend[1]),
        max_concurrent_migrations=1,
        migration_initial_interval=timedelta(minutes=5),
        migration_max_interval=timedelta(minutes=5),
    )
    request = spec(unique_id("ln"))
    _, history = await provisioned(temporal_client, settings, tenants, request)
    assert scheduled_queues(history) == [
        migration_task_queue(settings.task_queue, "backend-service")
    ]
    # Declined, not failed: no backoff (it would be 5 minutes), and the call made once.
    assert of_type(history, EventType.EVENT_TYPE_TIMER_STARTED) == 0
    assert len(backend[0].calls_for(request.id)) == 1


async def test_a_retry_calls_the_services_from_their_queues(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    backend: tuple[ScriptedService, str],
) -> None:
    # A retry arrives as an update or a signal; a workflow task that fails under a burst of
    # them would repeat a local attempt, and the call would count against the budget again.
    settings = make_settings(("backend-service", backend[1]))
    request = spec(unique_id("ln"))
    backend[0].script(request.id, 400, 200)
    gateway = WorkflowGateway(temporal_client, settings)
    handle = temporal_client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    async with running_worker(temporal_client, settings):
        await gateway.create(request, tenants)
        await eventually(
            lambda: tenants.get(request.id),
            lambda t: t is not None and t.status is TenantStatus.MIGRATION_ERROR,
        )
        assert scheduled_queues(await handle.fetch_history()) == [], "the first call was local"
        decision = await gateway.request_retry(request.id, "operator")
        assert decision is not None
        assert decision.accepted
        final = await asyncio.wait_for(handle.result(), timeout=60)
    assert final.status is TenantStatus.ACTIVE
    assert scheduled_queues(await handle.fetch_history()) == [
        migration_task_queue(settings.task_queue, "backend-service")
    ]
    assert len(backend[0].calls_for(request.id)) == 2
