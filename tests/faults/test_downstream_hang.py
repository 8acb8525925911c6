"""A downstream service that hangs beyond the migration timeout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, settle, spec
from tests.faults.downstream import HangingService
from tests.support.processes import worker_process
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_a_hanging_call_times_out_and_is_retried_under_the_same_key(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    service = HangingService()
    with serve(service.app()) as url:
        settings = make_settings(("backend-service", url), migration_timeout=timedelta(seconds=2))
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        tenant_id = unique_id("hang")
        try:
            await worker.start()
            await WorkflowGateway(temporal_client, settings).provision(spec(tenant_id))
            ledger.fault("downstream hangs beyond the migration timeout")
            tenant = (await settle(tenants, [tenant_id]))[tenant_id]
        finally:
            service.release()
            worker.kill()

    calls = service.calls_for(tenant_id)
    keys = [call.idempotency_key for call in calls]
    ledger.outcome([tenant_id], [tenant_id] if tenant.status is TenantStatus.ACTIVE else [])
    ledger.duplicates(extra_keys(keys))
    assert tenant.status is TenantStatus.ACTIVE, tenant
    assert [m.attempts for m in tenant.migrations] == [2], tenant.migrations
    assert len(calls) == 2, calls
    # The first attempt gave up (the worker's timeout closed the connection), the second won.
    assert calls[0].caller_gone
    assert calls[1].answered
    assert keys[0], keys
    assert keys[0] == keys[1], keys
