"""100 tenants provisioned while the worker is killed (-9) and restarted twice, against the
reference downstream services and their real migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import Client

from api.gateway import WorkflowGateway
from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.settings import DownstreamSettings
from infra.db.repository import TenantRepository
from tenancy.naming import storage_name
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.faults.conftest import FaultLedger, settings_env, settle, spec, storage_copies, until
from tests.faults.downstream import Gate
from tests.support.polling import eventually
from tests.support.processes import ManagedProcess, worker_process
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANTS = 100
ROUNDS = 2
# Tenants of each round whose migration calls the gate holds until the kill, so that it
# always lands mid-migration; fewer than the worker's migration cap, so the others flow.
HOSTAGES = 4
START_CONCURRENCY = 10
SERVICES = ("backend-service", "auth-service")


@pytest.fixture
def gated_reference_services(
    service_database_urls: dict[str, str], keys_dir: Path
) -> Iterator[tuple[Gate, list[tuple[str, str]]]]:
    """backend-service and auth-service verifying signed calls, behind one shared gate."""
    gate = Gate()

    def service(name: str) -> Any:
        settings = DownstreamSettings(
            service_name=name,
            database_url=service_database_urls[name],
            platform_public_key_file=keys_dir / "platform-signing.pem",
        )
        return gate.wrap(create_downstream_app(settings))

    with serve(service(SERVICES[0])) as backend, serve(service(SERVICES[1])) as auth:
        try:
            yield gate, [(SERVICES[0], backend), (SERVICES[1], auth)]
        finally:
            gate.open()


def applications(storage_url: str, tenant_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per tenant, how many times each migration is recorded in the services' own history
    tables (a migration and its record commit together)."""
    result: dict[str, dict[str, int]] = {}
    with psycopg.connect(storage_url) as conn:
        for tenant_id in tenant_ids:
            schema = storage_name(tenant_id)
            rows = conn.execute(
                f'SELECT migration_id, count(*) FROM (SELECT migration_id FROM "{schema}"'
                f'.backend_service_schema_history UNION ALL SELECT migration_id FROM "{schema}"'
                ".auth_service_schema_history) AS applied GROUP BY migration_id"
            ).fetchall()
            result[tenant_id] = {str(r[0]): int(r[1]) for r in rows}
    return result


async def _provision_and_kill(
    start: Callable[[str], Coroutine[Any, Any, None]],
    batch: list[str],
    worker: ManagedProcess,
    gate: Gate,
    tenants: TenantRepository,
    ledger: FaultLedger,
) -> None:
    """Provision `batch`, and `kill -9` the worker while the first tenants' calls are held."""
    hostages = batch[:HOSTAGES]
    gate.close(hostages)
    async with asyncio.TaskGroup() as group:
        for tenant_id in batch:
            group.create_task(start(tenant_id))
    await until(lambda: all(gate.held(t) >= 1 for t in hostages))
    # A create_storage attempt lost with the worker is retried only at its start-to-close
    # (2 minutes, workflows/options.py): kill once the whole batch has its storage.
    await eventually(
        lambda: asyncio.gather(*(tenants.get(t) for t in batch)),
        lambda rows: all(row is not None and row.jdbc_url for row in rows),
        timeout=60,
        interval=0.2,
    )
    worker.kill()
    ledger.fault("worker kill -9 with migrations in flight (100-tenant fleet)")
    # The held calls now run with nobody left to read their answers; later attempts of the
    # same calls must find those migrations applied.
    gate.open()
    await until(lambda: gate.held() == 0)
    await worker.start()


async def test_a_hundred_tenants_survive_two_worker_kills_with_each_migration_applied_once(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    storage_db_url: str,
    keys_dir: Path,
    ledger: FaultLedger,
    gated_reference_services: tuple[Gate, list[tuple[str, str]]],
) -> None:
    gate, services = gated_reference_services
    settings = make_settings(
        *services,
        migration_timeout=timedelta(seconds=4),
        migration_max_attempts=10,
        migration_initial_interval=timedelta(milliseconds=200),
        migration_max_interval=timedelta(seconds=2),
    )
    worker = worker_process(settings_env(settings, keys_dir), tmp_path)
    gateway = WorkflowGateway(temporal_client, settings)
    ids = [unique_id("fleet") for _ in range(TENANTS)]
    limit = asyncio.Semaphore(START_CONCURRENCY)

    async def start(tenant_id: str) -> None:
        async with limit:
            await gateway.provision(spec(tenant_id))

    batch = TENANTS // ROUNDS
    try:
        await worker.start()
        for round_ in range(ROUNDS):
            chunk = ids[round_ * batch : (round_ + 1) * batch]
            await _provision_and_kill(start, chunk, worker, gate, tenants, ledger)
        rows = await settle(tenants, ids, timeout=150)
    finally:
        gate.open()
        worker.kill()

    active = [t for t, row in rows.items() if row.status is TenantStatus.ACTIVE]
    applied = applications(storage_db_url, active)
    expected = {
        "backend_0001_accounts_projects",
        "backend_0002_project_archiving",
        "auth_0001_users",
        "auth_0002_sessions_roles",
    }
    ledger.outcome(ids, active)
    ledger.duplicates(sum(n - 1 for counts in applied.values() for n in counts.values() if n > 1))
    assert len(active) == TENANTS, {t: r.status for t, r in rows.items() if t not in active}
    assert worker.starts == ROUNDS + 1
    wrong = {t: counts for t, counts in applied.items() if counts != dict.fromkeys(expected, 1)}
    assert not wrong, wrong
    copies = {t: storage_copies(storage_db_url, storage_name(t)) for t in ids}
    assert set(copies.values()) == {1}, copies
