"""The Temporal server (dev server, file persistence) restarted mid-provisioning."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, settle, spec, until
from tests.faults.downstream import Gate
from tests.support.processes import temporal_process, worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANTS = 5


async def test_tenants_complete_across_a_temporal_server_restart(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    port = free_port()
    temporal = temporal_process(tmp_path / "temporal.db", port, free_port(), tmp_path)
    service = ScriptedService()
    gate = Gate()
    gate.close()
    ids = [unique_id("tmprl") for _ in range(TENANTS)]
    with serve(gate.wrap(service.app())) as url:
        settings = make_settings(("backend-service", url), temporal_address=f"127.0.0.1:{port}")
        worker = worker_process(settings_env(settings, keys_dir), tmp_path)
        try:
            await temporal.start()
            await worker.start()
            client = await Client.connect(
                f"127.0.0.1:{port}", data_converter=pydantic_data_converter
            )
            gateway = WorkflowGateway(client, settings)
            await asyncio.gather(*(gateway.provision(spec(t)) for t in ids))
            await until(lambda: all(gate.held(t) == 1 for t in ids))

            temporal.kill()
            ledger.fault("Temporal server kill -9 and restart mid-provisioning")
            # The calls complete while the server is down: the worker must report them later.
            gate.open()
            await until(lambda: len({c.tenant_id for c in service.calls}) == TENANTS)
            await temporal.start()

            rows = await settle(tenants, ids, timeout=90)
        finally:
            gate.open()
            worker.kill()
            temporal.kill()

    ledger.outcome(ids, [t for t, row in rows.items() if row.status is TenantStatus.ACTIVE])
    ledger.duplicates(sum(extra_keys(c.idempotency_key for c in service.calls_for(t)) for t in ids))
    assert {t: row.status for t, row in rows.items()} == dict.fromkeys(ids, TenantStatus.ACTIVE)
    for tenant_id in ids:
        keys = {call.idempotency_key for call in service.calls_for(tenant_id)}
        assert len(keys) == 1, keys
