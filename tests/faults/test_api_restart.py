"""The API process restarted between a POST and the tenant's completion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenancy.settings import Settings
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, until
from tests.faults.downstream import Gate
from tests.integration.test_api import token_for
from tests.support.polling import eventually
from tests.support.processes import api_process, worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_nothing_is_lost_when_the_api_restarts_before_completion(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    service = ScriptedService()
    gate = Gate()
    gate.close()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token_for(keys_dir)}"}
    with serve(gate.wrap(service.app())) as url:
        settings = make_settings(("backend-service", url))
        env = settings_env(settings, keys_dir)
        worker = worker_process(env, tmp_path)
        api = api_process(env, port, tmp_path)
        tenant_id = unique_id("api")
        try:
            await worker.start()
            await api.start()
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
                created = await http.post(
                    "/api/tenants",
                    json={
                        "id": tenant_id,
                        "name": "Api",
                        "storageMode": "SCHEMA",
                        "slaTier": "BASIC",
                    },
                )
                assert created.status_code == 202, created.text
            await until(lambda: gate.held(tenant_id) == 1)

            api.kill()
            ledger.fault("API kill -9 between POST and completion")
            gate.open()
            await api.start()

            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:

                async def read() -> dict[str, Any]:
                    return (await http.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]

                tenant = await eventually(
                    read, lambda t: t.get("status") in {"ACTIVE", "MIGRATION_ERROR"}, timeout=60
                )
                events = (await http.get(f"/api/tenants/{tenant_id}/events")).json()["items"]
        finally:
            gate.open()
            api.kill()
            worker.kill()

    keys = [call.idempotency_key for call in service.calls_for(tenant_id)]
    ledger.outcome([tenant_id], [tenant_id] if tenant["status"] == "ACTIVE" else [])
    ledger.duplicates(extra_keys(keys))
    assert tenant["status"] == "ACTIVE", tenant
    assert tenant["migrations"][0]["status"] == "SUCCEEDED", tenant
    assert events[0]["action"] == "CREATED", events
    assert keys == [keys[0]], keys
