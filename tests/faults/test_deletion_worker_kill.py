"""`kill -9` of the worker between the services' teardown and the drop of the storage.

A test connection holds ACCESS SHARE on a table in the tenant's schema, so the worker's
`DROP SCHEMA ... CASCADE` waits for it. The worker is killed while the drop waits, the lock is
released, and a new worker takes over: the tenant ends DELETED once, its schema gone, and no
service is asked to tear down twice (the teardown activities had completed before the kill, so
their results are in the history and the new worker does not run them again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import ActivityTaskStartedEventAttributes, HistoryEvent
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.models import EventAction
from tenancy.naming import deletion_workflow_id, storage_name
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, settings_env, settle, spec, storage_copies, until
from tests.support.polling import eventually
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def drop_waiting(storage_url: str, schema: str) -> bool:
    """Whether a `DROP SCHEMA` of `schema` waits for a lock."""
    with psycopg.connect(storage_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query ILIKE 'DROP SCHEMA%%' AND position(%s in query) > 0",
            (schema,),
        ).fetchone()
    return row is not None and int(row[0]) > 0


async def test_worker_killed_while_the_drop_waits_resumes_and_drops_once(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    storage_db_url: str,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    backend, auth = ScriptedService(), ScriptedService()
    with serve(backend.app()) as backend_url, serve(auth.app()) as auth_url:
        settings = make_settings(("backend-service", backend_url), ("auth-service", auth_url))
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        gateway = WorkflowGateway(temporal_client, settings)
        tenant_id = unique_id("delkill")
        schema = storage_name(tenant_id)
        holder = psycopg.connect(storage_db_url)
        try:
            await worker.start()
            await gateway.provision(spec(tenant_id))
            assert (await settle(tenants, [tenant_id]))[tenant_id].status is TenantStatus.ACTIVE
            with psycopg.connect(storage_db_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE TABLE {}.held (id int)").format(sql.Identifier(schema))
                )
            # Held until released below: the drop cannot take its ACCESS EXCLUSIVE lock.
            holder.execute(
                sql.SQL("LOCK TABLE {}.held IN ACCESS SHARE MODE").format(sql.Identifier(schema))
            )

            await gateway.schedule_deletion(tenant_id, "olivia", "churned", 0)
            await until(lambda: drop_waiting(storage_db_url, schema))
            torn_down = (len(backend.teardowns_for(tenant_id)), len(auth.teardowns_for(tenant_id)))

            worker.kill()
            ledger.fault("worker kill -9 while the drop waits for a lock")
            holder.rollback()
            await worker.start()

            deleted = await eventually(
                lambda: tenants.get(tenant_id),
                lambda t: t is not None and t.status is TenantStatus.DELETED,
                timeout=90,
                interval=0.2,
            )
            history = await temporal_client.get_workflow_handle(
                deletion_workflow_id(tenant_id)
            ).fetch_history()
        finally:
            holder.close()
            worker.kill()

    # The kill came after both teardowns and before the drop finished.
    assert torn_down == (1, 1)
    assert deleted is not None
    assert deleted.jdbc_url is None
    assert storage_copies(storage_db_url, schema) == 0
    for service in (backend, auth):
        calls = service.teardowns_for(tenant_id)
        assert len(calls) == 1, calls
        assert calls[0].idempotency_key
    to_deleted = [
        e
        for e in await tenants.events(tenant_id)
        if e.action is EventAction.STATUS_CHANGED and e.new_status is TenantStatus.DELETED
    ]
    assert len(to_deleted) == 1, to_deleted
    # The drop that completed was a retry on the new worker, not the killed worker's attempt.
    drop_starts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and _activity_type(history.events, e.activity_task_started_event_attributes)
        == "drop_storage"
    ]
    assert drop_starts, "no drop_storage attempt in the history"
    assert max(drop_starts) >= 2, drop_starts


def _activity_type(
    events: Sequence[HistoryEvent], started: ActivityTaskStartedEventAttributes
) -> str:
    """The activity type of an ActivityTaskStarted event, from its scheduled event."""
    for event in events:
        if event.event_id == started.scheduled_event_id:
            return str(event.activity_task_scheduled_event_attributes.activity_type.name)
    return ""
