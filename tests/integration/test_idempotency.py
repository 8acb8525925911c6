"""Activities may run more than once, and concurrently: each repeat must change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantOwnedElsewhere, TenantRepository, TransitionRefused
from infra.db.storage import StorageAdmin
from tenancy.models import EventAction, StorageMode, TenantSpec
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import unique_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def admin(storage_db_url: str) -> AsyncIterator[StorageAdmin]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        storage_db_url, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        yield StorageAdmin(pool, storage_db_url)


def spec() -> TenantSpec:
    return TenantSpec(
        id=unique_id("idem"), name="Idem", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )


@pytest.mark.parametrize("mode", [StorageMode.SCHEMA, StorageMode.DATABASE])
async def test_racing_storage_creations_all_succeed_and_create_it_once(
    admin: StorageAdmin, mode: StorageMode
) -> None:
    tenant_id = unique_id("race")
    locations = await asyncio.gather(*(admin.ensure(tenant_id, mode) for _ in range(6)))
    assert len({loc.jdbc_url for loc in locations}) == 1
    assert await admin.exists(locations[0])
    again = await admin.ensure(tenant_id, mode)
    assert again == locations[0]


async def test_record_tenant_rerun_finds_its_row_and_another_run_is_refused(
    tenants: TenantRepository, platform_db_url: str
) -> None:
    request = spec()
    first = await tenants.insert(request, "wf", "run-1", ["a-service", "b-service"])
    second = await tenants.insert(request, "wf", "run-1", ["a-service", "b-service"])
    assert first == second
    assert [m.status for m in second.migrations] == [MigrationStatus.PENDING] * 2
    with pytest.raises(TenantOwnedElsewhere):
        await tenants.insert(request, "wf", "run-2", ["a-service"])
    with psycopg.connect(platform_db_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM tenants WHERE id = %(id)s),"
            " (SELECT count(*) FROM tenant_migrations WHERE tenant_id = %(id)s)",
            {"id": request.id},
        ).fetchone()
    assert counts == (1, 2)


async def test_transitions_are_guarded_audited_and_repeats_are_no_ops(
    tenants: TenantRepository,
) -> None:
    request = spec()
    await tenants.insert(request, "wf", "run-1", [], created_by="alice")
    await tenants.insert(request, "wf", "run-1", [], created_by="alice")
    actor = "workflow:wf"
    migrating = TenantStatus.MIGRATING
    assert await tenants.transition(request.id, migrating, None, actor) is migrating
    assert await tenants.transition(request.id, migrating, None, actor) is migrating
    assert await tenants.transition(request.id, TenantStatus.ACTIVE, "done", actor) is (
        TenantStatus.ACTIVE
    )
    for late in (migrating, TenantStatus.MIGRATION_ERROR, TenantStatus.PROVISION_ERROR):
        with pytest.raises(TransitionRefused):
            await tenants.transition(request.id, late, "late activity", actor)
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.created_by == "alice"
    trail = [
        (e.actor, e.action, e.old_status, e.new_status, e.reason)
        for e in await tenants.events(request.id)
    ]
    assert trail == [
        ("alice", EventAction.CREATED, None, TenantStatus.PROVISIONING, None),
        (actor, EventAction.STATUS_CHANGED, TenantStatus.PROVISIONING, migrating, None),
        (actor, EventAction.STATUS_CHANGED, migrating, TenantStatus.ACTIVE, "done"),
    ]


async def test_a_late_attempt_never_undoes_a_succeeded_migration(tenants: TenantRepository) -> None:
    request = spec()
    await tenants.insert(request, "wf", "run-1", ["svc"])
    await tenants.migration_attempt_started(request.id, "svc")
    await tenants.migration_succeeded(request.id, "svc", "0002")
    await tenants.migration_attempt_started(request.id, "svc")
    await tenants.migration_attempt_failed(request.id, "svc", "timed out")
    await tenants.migration_failed(request.id, "svc", "gave up")
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert (record.status, record.version, record.attempts, record.last_error) == (
        MigrationStatus.SUCCEEDED,
        "0002",
        1,
        None,
    )
