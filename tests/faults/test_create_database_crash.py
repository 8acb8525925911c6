"""`kill -9` of the worker while it is inside `CREATE DATABASE`.

The worker is caught inside the statement deterministically: another session holds an open
transaction that commented on `template1`, which keeps a lock `CREATE DATABASE` must wait for
(it copies `template1`). The killed worker's backend lives on, still waiting; once the lock
is released it finishes the database with nobody to tell. The retry must cope with that
half-done attempt. Temporal only retries the lost attempt at create_storage's start-to-close
timeout (2 minutes, workflows/options.py), so this test takes that long.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.models import StorageMode
from tenancy.naming import storage_name
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import (
    FaultLedger,
    extra_keys,
    settings_env,
    settle,
    spec,
    storage_copies,
    tenant_rows,
    until,
)
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="session"),
    # The lost attempt waits out create_storage's 2-minute start-to-close timeout.
    pytest.mark.timeout(240),
]


def _waiting_creates(server_url: str, database: str) -> int:
    with psycopg.connect(server_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query ILIKE %s",
            (f'CREATE DATABASE "{database}"%',),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_worker_killed_inside_create_database_then_the_retry_copes(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    pg_server_url: str,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    service = ScriptedService()
    tenant_id = unique_id("cdb")
    database = storage_name(tenant_id)
    with serve(service.app()) as url, psycopg.connect(pg_server_url) as locker:
        settings = make_settings(("backend-service", url))
        storage_url = settings.require_storage_database_url()
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        try:
            await worker.start()
            locker.execute("COMMENT ON DATABASE template1 IS 'held by a fault test'")
            await WorkflowGateway(temporal_client, settings).provision(
                spec(tenant_id, StorageMode.DATABASE)
            )
            await until(lambda: _waiting_creates(pg_server_url, database) == 1)

            worker.kill()
            ledger.fault("worker kill -9 inside CREATE DATABASE")
            locker.rollback()
            # The orphaned statement completes: the database exists, the attempt is lost.
            await until(lambda: storage_copies(storage_url, database) == 1)
            half_done = await tenants.get(tenant_id)
            await worker.start()

            tenant = (await settle(tenants, [tenant_id], timeout=200))[tenant_id]
        finally:
            locker.rollback()
            worker.kill()

    keys = [call.idempotency_key for call in service.calls_for(tenant_id)]
    ledger.outcome([tenant_id], [tenant_id] if tenant.status is TenantStatus.ACTIVE else [])
    ledger.duplicates(extra_keys(keys))
    assert half_done is not None
    assert half_done.jdbc_url is None, half_done
    assert tenant.status is TenantStatus.ACTIVE, tenant
    assert tenant.jdbc_url is not None
    assert tenant.jdbc_url.endswith(f"/{database}"), tenant.jdbc_url
    assert storage_copies(storage_url, database) == 1
    assert tenant_rows(settings.require_database_url(), tenant_id) == 1
    assert len(keys) == 1, keys
