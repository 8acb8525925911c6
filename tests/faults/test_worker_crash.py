"""`kill -9` of the worker while a downstream migration call is in flight."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
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
from tests.faults.downstream import Gate
from tests.support.processes import worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_worker_killed_during_a_migration_call_resumes_with_the_same_key(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    service = ScriptedService()
    gate = Gate()
    gate.close()
    with serve(gate.wrap(service.app())) as url:
        # The lost attempt is noticed at start-to-close: this timeout + 10 s.
        settings = make_settings(("backend-service", url), migration_timeout=timedelta(seconds=3))
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        tenant_id = unique_id("kill")
        try:
            await worker.start()
            await WorkflowGateway(temporal_client, settings).provision(spec(tenant_id))
            await until(lambda: gate.held(tenant_id) == 1)

            worker.kill()
            ledger.fault("worker kill -9 during a migration call")
            # The held call now reaches the service with nobody left to read its answer.
            gate.open()
            await worker.start()

            tenant = (await settle(tenants, [tenant_id]))[tenant_id]
        finally:
            gate.open()
            worker.kill()

    calls = service.calls_for(tenant_id)
    keys = [call.idempotency_key for call in calls]
    ledger.outcome([tenant_id], [tenant_id] if tenant.status is TenantStatus.ACTIVE else [])
    ledger.duplicates(extra_keys(keys))
    assert tenant.status is TenantStatus.ACTIVE, tenant
    assert len(calls) >= 2, calls
    assert keys[0], keys
    assert len(set(keys)) == 1, keys
    assert storage_copies(settings.require_storage_database_url(), storage_name(tenant_id)) == 1
    assert tenant_rows(settings.require_database_url(), tenant_id) == 1
