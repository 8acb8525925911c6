"""Drift between tenant rows, workflows and storage, created for real and then reported (and
the stuck tenant repaired). The session's databases are shared with other tests, so the
reconciler here only looks at this module's tenant-id prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from api.auth import READ_SCOPE
from api.gateway import WorkflowGateway
from api.main import create_app
from infra.db.repository import TenantRepository
from infra.db.schema import apply_platform_migrations
from infra.db.servers import ServerRepository
from reconciliation import DriftKind, Reconciler, ReconciliationReport
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, with_database
from tests.integration.test_api import token_for
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
REPO = Path(__file__).resolve().parents[2]
SERVICES = ("backend-service", "auth-service")


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"rc{uuid.uuid4().hex[:6]}_"


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[ScriptedService, list[tuple[str, str]]]]:
    auth = ScriptedService(version="auth-1")
    with (
        serve(ScriptedService(version="backend-1").app()) as backend_url,
        serve(auth.app()) as auth_url,
    ):
        yield auth, [(SERVICES[0], backend_url), (SERVICES[1], auth_url)]


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, list[tuple[str, str]]],
) -> Settings:
    return make_settings(*services[1])


@pytest_asyncio.fixture(loop_scope="session")
async def worker(temporal_client: Client, settings: Settings) -> AsyncIterator[None]:
    async with running_worker(temporal_client, settings):
        yield


def reconciler(
    tenants: TenantRepository, client: Client, settings: Settings, prefix: str
) -> Reconciler:
    return Reconciler(
        tenants,
        client,
        servers=settings.storage_fleet(),
        task_queue=settings.task_queue,
        id_prefix=prefix,
    )


def spec(tenant_id: str) -> TenantSpec:
    return TenantSpec(
        id=tenant_id, name="Drift Corp", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )


def execute(url: str, statement: sql.SQL | sql.Composed, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def kinds(report: ReconciliationReport) -> set[tuple[DriftKind, str | None]]:
    return {(d.kind, d.tenant_id) for d in report.drift}


async def wait_status(tenants: TenantRepository, tenant_id: str, status: TenantStatus) -> None:
    await eventually(
        lambda: tenants.get(tenant_id), lambda t: t is not None and t.status is status, timeout=60
    )


async def test_each_kind_of_drift_is_reported_and_the_stuck_tenant_repaired(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    servers: ServerRepository,
    services: tuple[ScriptedService, list[tuple[str, str]]],
    prefix: str,
    worker: None,
) -> None:
    storage_url = settings.require_storage_database_url()
    ok, dropped, behind, stuck, stray = (
        f"{prefix}{name}" for name in ("ok", "dropped", "behind", "stuck", "stray")
    )
    auth, _ = services
    auth.script(behind, 400)
    gateway = WorkflowGateway(temporal_client, settings)
    for tenant_id in (ok, dropped, behind):
        await gateway.provision(spec(tenant_id))
    await wait_status(tenants, ok, TenantStatus.ACTIVE)
    await wait_status(tenants, dropped, TenantStatus.ACTIVE)
    await wait_status(tenants, behind, TenantStatus.MIGRATION_ERROR)
    check = reconciler(tenants, temporal_client, settings, prefix)
    # Settled (the search attribute follows each transition a moment later): no drift.
    clean = await eventually(check.run, lambda r: not r.drift)
    assert clean.drift == []

    execute(
        storage_url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(f"tenant_{dropped}"))
    )
    execute(storage_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"tenant_{stray}")))
    # A row whose workflow is gone (never existed here): MIGRATING, storage in place.
    await tenants.insert(spec(stuck), provision_workflow_id(stuck), "lost-run", SERVICES)
    # Placed, as provisioning places a tenant before its storage is created.
    await servers.place(stuck, settings.storage_fleet(), settings.placement_map())
    await tenants.transition(stuck, TenantStatus.MIGRATING, None, "test")
    execute(storage_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"tenant_{stuck}")))
    # Behind the workflow's back: the workflow still waits in MIGRATION_ERROR.
    execute(
        settings.require_database_url(),
        sql.SQL("UPDATE tenants SET status = 'ACTIVE' WHERE id = %s"),
        (behind,),
    )

    report = await check.run()

    assert kinds(report) == {
        (DriftKind.STORAGE_MISSING, dropped),
        (DriftKind.ORPHAN_STORAGE, stray),
        (DriftKind.STUCK_WITHOUT_WORKFLOW, stuck),
        (DriftKind.STATUS_MISMATCH, behind),
    }
    assert not any(d.repaired for d in report.drift)
    details = {d.kind: d.detail for d in report.drift}
    assert "workflow reports MIGRATION_ERROR" in details[DriftKind.STATUS_MISMATCH]
    assert "TenantStatus search attribute is MIGRATION_ERROR" in details[DriftKind.STATUS_MISMATCH]
    assert (
        details[DriftKind.STUCK_WITHOUT_WORKFLOW]
        == "tenant is MIGRATING, its workflow is not found"
    )
    assert (await tenants.get(stuck)).status is TenantStatus.MIGRATING  # type: ignore[union-attr]

    repaired = await check.run(repair=True)

    assert {(d.kind, d.tenant_id) for d in repaired.drift if d.repaired} == {
        (DriftKind.STUCK_WITHOUT_WORKFLOW, stuck)
    }
    await wait_status(tenants, stuck, TenantStatus.ACTIVE)
    revived = await tenants.get(stuck)
    assert revived is not None
    assert {m.service: m.version for m in revived.migrations} == {
        "backend-service": "backend-1",
        "auth-service": "auth-1",
    }
    # Nothing was deleted or recreated: the rest is still there for an operator.
    after = await eventually(
        check.run, lambda r: (DriftKind.STUCK_WITHOUT_WORKFLOW, stuck) not in kinds(r)
    )
    assert kinds(after) == {
        (DriftKind.STORAGE_MISSING, dropped),
        (DriftKind.ORPHAN_STORAGE, stray),
        (DriftKind.STATUS_MISMATCH, behind),
    }
    await temporal_client.get_workflow_handle(provision_workflow_id(behind)).terminate("test done")


async def test_a_completed_workflow_and_a_changed_row_disagree(
    temporal_client: Client,
    settings: Settings,
    tenants: TenantRepository,
    worker: None,
) -> None:
    prefix = f"rc{uuid.uuid4().hex[:6]}_"
    tenant_id = f"{prefix}done"
    await WorkflowGateway(temporal_client, settings).provision(spec(tenant_id))
    await wait_status(tenants, tenant_id, TenantStatus.ACTIVE)
    check = reconciler(tenants, temporal_client, settings, prefix)
    await eventually(check.run, lambda r: not r.drift)
    execute(
        settings.require_database_url(),
        sql.SQL("UPDATE tenants SET status = 'MIGRATION_ERROR' WHERE id = %s"),
        (tenant_id,),
    )

    report = await check.run(repair=True)

    (drift,) = report.drift
    # A MIGRATION_ERROR tenant without a running workflow: its retry signal has nowhere to go,
    # and re-running its migrations unasked is not the reconciler's call.
    assert drift.kind is DriftKind.STUCK_WITHOUT_WORKFLOW
    assert drift.tenant_id == tenant_id
    assert not drift.repaired
    assert drift.detail == "tenant is MIGRATION_ERROR, its workflow is completed"


async def test_command_prints_the_report_and_exits_1_on_drift(
    settings: Settings, prefix: str, temporal_client: Client
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "TEMPORAL_"))}
    env |= {
        "PLATFORM_DATABASE_URL": settings.require_database_url(),
        "PLATFORM_STORAGE_DATABASE_URL": settings.require_storage_database_url(),
        "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PLATFORM_TASK_QUEUE": settings.task_queue,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciliation", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    drifted = run("--prefix", prefix)
    clean = run("--prefix", f"none{uuid.uuid4().hex[:6]}_")

    assert drifted.returncode == 1, drifted.stderr
    assert "ORPHAN_STORAGE" in drifted.stdout
    assert f"{prefix}stray" in drifted.stdout
    assert clean.returncode == 0, clean.stderr
    assert "no drift" in clean.stdout


async def test_admin_endpoint_reports_drift_to_operators_only(
    settings: Settings, keys_dir: Path, prefix: str
) -> None:
    with serve(create_app(settings)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            path = "/api/admin/reconciliation"
            anonymous = await http.get(path)
            reader = await http.get(
                path, headers={"Authorization": f"Bearer {token_for(keys_dir, 'r', READ_SCOPE)}"}
            )
            operator = await http.get(
                path, headers={"Authorization": f"Bearer {token_for(keys_dir)}"}
            )

    assert anonymous.status_code == 401
    assert reader.status_code == 403
    assert operator.status_code == 200, operator.text
    body = operator.json()
    assert set(body) == {"drift", "unreachableServers", "checkedAt"}
    assert body["unreachableServers"] == []
    assert {
        "kind": "ORPHAN_STORAGE",
        "tenantId": f"{prefix}stray",
        "rolloutId": None,
        "server": "default",
        "detail": (
            f"schema tenant_{prefix}stray on server default has no tenant row (left in place)"
        ),
        "repaired": False,
    } in body["drift"]


def fresh_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the session's server: a repair pass acts on every tenant it
    sees, so this one sees only its own."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    execute(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


async def test_admin_repairs_are_a_post_and_get_only_reports(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    services: tuple[ScriptedService, list[tuple[str, str]]],
    pg_server_url: str,
    keys_dir: Path,
) -> None:
    metadata_url = fresh_database(pg_server_url, "admin_platform_")
    # Migrated before the worker starts: it reads the servers' tenants at start, as
    # `python worker.py` does after migrating.
    apply_platform_migrations(metadata_url)
    settings = make_settings(
        *services[1],
        database_url=metadata_url,
        storage_database_url=fresh_database(pg_server_url, "admin_tenants_"),
    )
    stuck = f"adm{uuid.uuid4().hex[:6]}_stuck"
    operator = {"Authorization": f"Bearer {token_for(keys_dir, 'carol')}"}
    reader = {"Authorization": f"Bearer {token_for(keys_dir, 'r', READ_SCOPE)}"}
    path = "/api/admin/reconciliation"
    async with running_worker(temporal_client, settings):
        with serve(create_app(settings)) as base_url:
            async with (
                AsyncConnectionPool(settings.require_database_url(), min_size=1) as pool,
                httpx.AsyncClient(base_url=base_url, timeout=60) as http,
            ):
                rows = TenantRepository(pool)
                await rows.insert(spec(stuck), provision_workflow_id(stuck), "lost-run", SERVICES)
                await rows.transition(stuck, TenantStatus.MIGRATING, None, "test")

                reported = await http.get(path, headers=operator)
                get_repair = await http.get(path, params={"repair": "true"}, headers=operator)
                refused = await http.post(path, headers=reader)
                anonymous = await http.post(path)
                unchanged = await rows.get(stuck)
                events_before = await rows.events(stuck)
                repaired = await http.post(path, headers=operator)
                await wait_status(rows, stuck, TenantStatus.ACTIVE)
                events_after = await rows.events(stuck)

    assert reported.status_code == 200, reported.text
    [drift] = [d for d in reported.json()["drift"] if d["kind"] == "STUCK_WITHOUT_WORKFLOW"]
    assert drift["tenantId"] == stuck
    assert drift["repaired"] is False
    assert get_repair.status_code == 422
    assert get_repair.headers["content-type"].startswith("application/problem+json")
    assert "POST /api/admin/reconciliation" in get_repair.json()["detail"]
    assert refused.status_code == 403
    assert anonymous.status_code == 401
    # Neither the GETs nor the refused POSTs touched the tenant.
    assert unchanged is not None
    assert unchanged.status is TenantStatus.MIGRATING
    assert [e.action for e in events_before] == ["CREATED", "STATUS_CHANGED"]
    assert repaired.status_code == 200, repaired.text
    [fixed] = [d for d in repaired.json()["drift"] if d["kind"] == "STUCK_WITHOUT_WORKFLOW"]
    assert fixed["tenantId"] == stuck
    assert fixed["repaired"] is True
    adopted = [e for e in events_after if e.action == "RUN_ADOPTED"]
    assert [e.actor for e in adopted] == ["reconciler:carol"]
