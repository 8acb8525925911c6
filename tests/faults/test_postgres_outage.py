"""PostgreSQL stopped for about ten seconds in the middle of provisioning."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from devstack.postgres import EmbeddedPostgres
from tenancy.naming import storage_name
from tenancy.settings import Settings
from tests.conftest import unique_id, with_database
from tests.faults.conftest import FaultLedger, extra_keys, settings_env, storage_copies, until
from tests.faults.downstream import Gate
from tests.integration.test_api import token_for
from tests.support.polling import eventually
from tests.support.processes import api_process, worker_process
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

OUTAGE = 10.0
TENANTS = 3


def _database(server: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server.url, name)


def _is_clean_503(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers["content-type"].startswith("application/problem+json")
        and "Traceback" not in response.text
        and 'File "' not in response.text
    )


async def test_tenants_complete_after_postgresql_returns_and_the_api_says_503_meanwhile(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    keys_dir: Path,
    ledger: FaultLedger,
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), durable=False)
    service = ScriptedService()
    gate = Gate()
    gate.close()
    port = free_port()
    headers = {"Authorization": f"Bearer {token_for(keys_dir)}"}
    ids = [unique_id("pgdown") for _ in range(TENANTS)]
    server.start()
    try:
        with serve(gate.wrap(service.app())) as url:
            settings = make_settings(
                ("backend-service", url),
                database_url=_database(server, "platform"),
                storage_database_url=_database(server, "tenants"),
                # Attempts that fail on the metadata database count against the policy.
                migration_max_attempts=10,
                migration_initial_interval=timedelta(milliseconds=500),
                migration_max_interval=timedelta(seconds=4),
            )
            env = settings_env(settings, keys_dir)
            worker = worker_process(env, tmp_path)
            api = api_process(env, port, tmp_path)
            try:
                await worker.start()
                await api.start()
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
                ) as http:
                    for tenant_id in ids:
                        created = await http.post(
                            "/api/tenants",
                            json={
                                "id": tenant_id,
                                "name": "Down",
                                "storageMode": "SCHEMA",
                                "slaTier": "BASIC",
                            },
                        )
                        assert created.status_code == 202, created.text
                    await until(lambda: all(gate.held(t) == 1 for t in ids))

                    server.stop()
                    ledger.fault("PostgreSQL stopped for 10 s during provisioning")
                    # The held calls finish while the worker cannot record their results.
                    gate.open()
                    answers: list[httpx.Response] = []
                    back_at = time.monotonic() + OUTAGE
                    while time.monotonic() < back_at:
                        answers.append(await http.get("/readyz"))
                        answers.append(await http.get(f"/api/tenants/{ids[0]}"))
                    server.start()

                    async def rows() -> list[dict[str, Any]]:
                        return [(await http.get(f"/api/tenants/{t}")).json() for t in ids]

                    final = await eventually(
                        rows,
                        lambda rs: all(
                            r.get("status") in {"ACTIVE", "MIGRATION_ERROR"} for r in rs
                        ),
                        timeout=90,
                        interval=0.2,
                    )
            finally:
                gate.open()
                api.kill()
                worker.kill()
        copies = {
            t: storage_copies(settings.require_storage_database_url(), storage_name(t)) for t in ids
        }
    finally:
        server.stop()

    ledger.outcome(ids, [r["id"] for r in final if r.get("status") == "ACTIVE"])
    ledger.duplicates(sum(extra_keys(c.idempotency_key for c in service.calls_for(t)) for t in ids))
    assert len(answers) >= 4
    bad = [(a.request.url.path, a.status_code, a.text) for a in answers if not _is_clean_503(a)]
    assert not bad, bad
    assert [r["status"] for r in final] == ["ACTIVE"] * TENANTS, final
    assert copies == dict.fromkeys(ids, 1)
    for tenant_id in ids:
        keys = {call.idempotency_key for call in service.calls_for(tenant_id)}
        assert len(keys) == 1, keys
