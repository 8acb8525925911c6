"""`DeletionRepository` (and the deletion rules of `TenantRepository`) on the real PostgreSQL,
as the platform's own role: scheduling from every deletable status, repeats and races,
restore, the purge's progress records, and the DELETED tombstone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from infra.db.deletions import DeletionConflict, DeletionRepository, TenantMissing
from infra.db.paging import PagePosition
from infra.db.repository import (
    Adoption,
    TenantOwnedElsewhere,
    TenantRepository,
    TransitionRefused,
)
from tenancy.models import BackupRecord, Deletion, EventAction, StorageMode, Tenant, TenantSpec
from tenancy.status import DELETABLE, DELETION_STATUSES, TenantStatus
from tests.conftest import unique_id

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

S = TenantStatus
ACTOR = "olivia"
# The transitions a provisioning run takes to leave a new tenant in each deletable status.
WALK_TO = {
    S.PROVISIONING: [],
    S.MIGRATING: [S.MIGRATING],
    S.ACTIVE: [S.MIGRATING, S.ACTIVE],
    S.PROVISION_ERROR: [S.PROVISION_ERROR],
    S.MIGRATION_ERROR: [S.MIGRATING, S.MIGRATION_ERROR],
}
# Where restore returns a tenant scheduled from each status: a provisioning run the deletion
# stopped is left in its error status, with its retry.
RESTORED_TO = {
    S.PROVISIONING: S.PROVISION_ERROR,
    S.MIGRATING: S.MIGRATION_ERROR,
    S.ACTIVE: S.ACTIVE,
    S.PROVISION_ERROR: S.PROVISION_ERROR,
    S.MIGRATION_ERROR: S.MIGRATION_ERROR,
}
# From DELETION_SCHEDULED to each deletion status, as the purge moves.
PURGE_TO = {
    S.DELETION_SCHEDULED: [],
    S.DELETING: [S.DELETING],
    S.DELETION_ERROR: [S.DELETING, S.DELETION_ERROR],
    S.DELETED: [S.DELETING, S.DELETION_ERROR, S.DELETING, S.DELETED],
}
BACKUP = BackupRecord(path="/backups/t.dump", size_bytes=1234, sha256="ab" * 32)


class Repositories:
    """Both repositories on one pool, and the helpers that stage a tenant's status."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.tenants = TenantRepository(pool)
        self.deletions = DeletionRepository(pool)

    async def tenant_in(
        self, status: TenantStatus, run_id: str = "run-1", jdbc_url: str | None = None
    ) -> str:
        """A new tenant (owned by `run_id`, its storage at `jdbc_url` once provisioned) walked
        to `status` along the machine."""
        tenant_id = unique_id("del")
        spec = TenantSpec(
            id=tenant_id, name="Deleted Co", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
        )
        await self.tenants.insert(spec, f"wf-{tenant_id}", run_id, ["backend-service"])
        if jdbc_url is not None:
            await self.tenants.set_jdbc_url(tenant_id, jdbc_url)
        if status in DELETION_STATUSES:
            await self.tenants.transition(tenant_id, S.MIGRATING, None, "test")
            await self.tenants.transition(tenant_id, S.ACTIVE, None, "test")
            await self.schedule(tenant_id, at(0))
            walk = PURGE_TO[status]
        else:
            walk = WALK_TO[status]
        for target in walk:
            await self.tenants.transition(tenant_id, target, None, "test")
        assert (await self.get(tenant_id)).status is status
        return tenant_id

    async def schedule(self, tenant_id: str, requested_at: datetime) -> None:
        await self.deletions.schedule(
            tenant_id,
            requested_by=ACTOR,
            reason="churned",
            requested_at=requested_at,
            purge_at=requested_at + timedelta(days=7),
        )

    async def get(self, tenant_id: str) -> Tenant:
        tenant = await self.tenants.get(tenant_id)
        assert tenant is not None
        return tenant

    async def actions(self, tenant_id: str) -> list[EventAction]:
        return [event.action for event in await self.tenants.events(tenant_id)]

    async def status_changes(self, tenant_id: str) -> list[tuple[S | None, S | None]]:
        return [
            (event.old_status, event.new_status)
            for event in await self.tenants.events(tenant_id)
            if event.action is EventAction.STATUS_CHANGED
        ]


def deletion_of(tenant: Tenant) -> Deletion:
    """The tenant's deletion request, which the test expects to be there."""
    assert tenant.deletion is not None, f"{tenant.id} has no deletion"
    return tenant.deletion


def at(seconds: int) -> datetime:
    """A fixed request time (PostgreSQL keeps microseconds, so it compares equal read back)."""
    return datetime(2026, 11, 30, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)


@pytest_asyncio.fixture(loop_scope="session")
async def repos(platform_role_urls: tuple[str, str]) -> AsyncIterator[Repositories]:
    """The repositories as the worker and API build them: the platform's role, a small pool."""
    async with AsyncConnectionPool(platform_role_urls[0], min_size=1, max_size=8) as pool:
        yield Repositories(pool)


@pytest.mark.parametrize("status", sorted(DELETABLE), ids=str)
async def test_schedule_from_each_deletable_status_and_restore(
    repos: Repositories, status: TenantStatus
) -> None:
    tenant_id = await repos.tenant_in(status)

    await repos.schedule(tenant_id, at(1))
    scheduled = await repos.get(tenant_id)
    progress = await repos.deletions.progress(tenant_id)
    restored = await repos.deletions.restore(tenant_id, "rita", "mistake")
    back = await repos.get(tenant_id)
    after = await repos.deletions.progress(tenant_id)

    assert scheduled.status is S.DELETION_SCHEDULED
    assert scheduled.deletion is not None
    assert (scheduled.deletion.requested_at, scheduled.deletion.purge_at) == (
        at(1),
        at(1) + timedelta(days=7),
    )
    assert (scheduled.deletion.requested_by, scheduled.deletion.reason) == (ACTOR, "churned")
    assert (progress.status, progress.requested_at, progress.backup) == (
        S.DELETION_SCHEDULED,
        at(1),
        None,
    )
    assert restored is RESTORED_TO[status]
    assert back.status is RESTORED_TO[status]
    assert back.deletion is None
    assert (after.requested_at, after.purge_at, after.backup, after.torn_down) == (
        None,
        None,
        None,
        frozenset(),
    )
    changes = await repos.status_changes(tenant_id)
    assert changes[-2:] == [
        (status, S.DELETION_SCHEDULED),
        (S.DELETION_SCHEDULED, RESTORED_TO[status]),
    ]
    actions = await repos.actions(tenant_id)
    assert actions.count(EventAction.DELETION_REQUESTED) == 1
    assert actions.count(EventAction.DELETION_CANCELLED) == 1
    assert actions.index(EventAction.DELETION_REQUESTED) < actions.index(
        EventAction.DELETION_CANCELLED
    )


@pytest.mark.parametrize("status", sorted(DELETABLE), ids=str)
async def test_a_repeated_restore_is_a_no_op(repos: Repositories, status: TenantStatus) -> None:
    # The restore activity retried after its first attempt committed (a lost answer, a worker
    # gone after the commit): it must answer as the first did, not fail the deletion run.
    tenant_id = await repos.tenant_in(status)
    await repos.schedule(tenant_id, at(1))
    first = await repos.deletions.restore(tenant_id, "rita", "mistake")

    again = await repos.deletions.restore(tenant_id, "rita", "mistake")

    assert again is first is RESTORED_TO[status]
    assert (await repos.get(tenant_id)).status is RESTORED_TO[status]
    assert (await repos.actions(tenant_id)).count(EventAction.DELETION_CANCELLED) == 1
    changes = await repos.status_changes(tenant_id)
    assert changes.count((S.DELETION_SCHEDULED, RESTORED_TO[status])) == 1


async def test_a_late_restore_of_an_earlier_deletion_leaves_a_newer_one(
    repos: Repositories,
) -> None:
    tenant_id = await repos.tenant_in(S.ACTIVE)
    await repos.schedule(tenant_id, at(1))
    assert await repos.deletions.restore(tenant_id, "rita", None, at(1)) is S.ACTIVE
    await repos.schedule(tenant_id, at(2))

    # A restore attempt of the first deletion's run, arriving after the second request.
    with pytest.raises(TransitionRefused):
        await repos.deletions.restore(tenant_id, "rita", None, at(1))
    kept = await repos.get(tenant_id)
    restored = await repos.deletions.restore(tenant_id, "rita", None, at(2))

    assert kept.status is S.DELETION_SCHEDULED
    assert restored is S.ACTIVE
    assert (await repos.actions(tenant_id)).count(EventAction.DELETION_CANCELLED) == 2


async def test_a_repeated_request_is_a_no_op_and_another_is_a_conflict(
    repos: Repositories,
) -> None:
    tenant_id = await repos.tenant_in(S.ACTIVE)

    await repos.schedule(tenant_id, at(1))
    await repos.schedule(tenant_id, at(1))
    with pytest.raises(DeletionConflict) as conflict:
        await repos.schedule(tenant_id, at(2))

    assert conflict.value.status is S.DELETION_SCHEDULED
    tenant = await repos.get(tenant_id)
    assert deletion_of(tenant).requested_at == at(1)
    assert (await repos.actions(tenant_id)).count(EventAction.DELETION_REQUESTED) == 1
    assert (await repos.status_changes(tenant_id)).count((S.ACTIVE, S.DELETION_SCHEDULED)) == 1


@pytest.mark.parametrize("status", [S.DELETING, S.DELETION_ERROR, S.DELETED], ids=str)
async def test_a_deletion_under_way_or_done_is_not_asked_again(
    repos: Repositories, status: TenantStatus
) -> None:
    tenant_id = await repos.tenant_in(status)

    for requested_at in (at(0), at(5)):
        with pytest.raises(DeletionConflict):
            await repos.schedule(tenant_id, requested_at)

    assert (await repos.get(tenant_id)).status is status


async def test_schedule_and_restore_of_an_unknown_tenant(repos: Repositories) -> None:
    with pytest.raises(TenantMissing):
        await repos.schedule(unique_id("nobody"), at(0))
    with pytest.raises(TenantMissing):
        await repos.deletions.restore(unique_id("nobody"), ACTOR, None)


@pytest.mark.parametrize("status", [S.DELETING, S.DELETION_ERROR, S.DELETED], ids=str)
async def test_restore_once_the_purge_has_started_is_refused(
    repos: Repositories, status: TenantStatus
) -> None:
    tenant_id = await repos.tenant_in(status)

    with pytest.raises(TransitionRefused):
        await repos.deletions.restore(tenant_id, "rita", "too late")

    tenant = await repos.get(tenant_id)
    assert tenant.status is status
    assert deletion_of(tenant).requested_at == at(0)
    assert EventAction.DELETION_CANCELLED not in await repos.actions(tenant_id)


async def test_a_second_deletion_after_a_restore(repos: Repositories) -> None:
    tenant_id = await repos.tenant_in(S.ACTIVE)
    await repos.schedule(tenant_id, at(1))
    await repos.deletions.restore(tenant_id, ACTOR, None)

    await repos.schedule(tenant_id, at(2))

    tenant = await repos.get(tenant_id)
    assert tenant.status is S.DELETION_SCHEDULED
    assert deletion_of(tenant).requested_at == at(2)
    assert (await repos.actions(tenant_id)).count(EventAction.DELETION_REQUESTED) == 2


async def test_the_backup_is_recorded_once(repos: Repositories) -> None:
    tenant_id = await repos.tenant_in(S.DELETING)
    other = BackupRecord(path="/backups/other.dump", size_bytes=1, sha256="cd" * 32)

    first = await repos.deletions.record_backup(tenant_id, BACKUP, "worker")
    second = await repos.deletions.record_backup(tenant_id, other, "worker")

    assert (first, second) == (True, False)
    assert (await repos.deletions.progress(tenant_id)).backup == BACKUP
    tenant = await repos.get(tenant_id)
    assert deletion_of(tenant).backup == BACKUP
    taken = [
        event
        for event in await repos.tenants.events(tenant_id)
        if event.action is EventAction.BACKUP_TAKEN
    ]
    assert len(taken) == 1
    assert BACKUP.sha256 in (taken[0].reason or "")


async def test_a_service_torn_down_is_recorded_once(
    repos: Repositories, platform_db_url: str
) -> None:
    tenant_id = await repos.tenant_in(S.DELETING)

    for service in ("backend-service", "backend-service", "auth-service", "backend-service"):
        await repos.deletions.record_torn_down(tenant_id, service)

    progress = await repos.deletions.progress(tenant_id)
    assert progress.torn_down == {"backend-service", "auth-service"}
    # The stored array itself, not only the set read back: no service twice.
    with psycopg.connect(platform_db_url) as conn:
        row = conn.execute(
            "SELECT deletion_torn_down FROM tenants WHERE id = %s", (tenant_id,)
        ).fetchone()
    assert row == (["backend-service", "auth-service"],)


async def test_deleted_tombstone_points_at_no_storage_and_stays(repos: Repositories) -> None:
    tenant_id = await repos.tenant_in(S.DELETING, jdbc_url="jdbc:postgresql://db:5432/tenants")
    # Storage recorded late (a creation that outlived its cancelled run) is not recorded.
    await repos.tenants.set_jdbc_url(tenant_id, "jdbc:postgresql://elsewhere:5432/tenants")
    await repos.tenants.transition(tenant_id, S.DELETION_ERROR, "backup failed", "worker")
    failed = await repos.get(tenant_id)

    await repos.tenants.transition(tenant_id, S.DELETING, None, "worker")
    await repos.tenants.transition(tenant_id, S.DELETED, None, "worker")
    deleted = await repos.get(tenant_id)

    # A failed purge still knows where the storage is; the tombstone does not.
    assert failed.jdbc_url == "jdbc:postgresql://db:5432/tenants"
    assert deleted.status is S.DELETED
    assert deleted.jdbc_url is None
    assert deletion_of(deleted).requested_at == at(0)
    for target in TenantStatus:
        if target is not S.DELETED:
            with pytest.raises(TransitionRefused):
                await repos.tenants.transition(tenant_id, target, None, "late")
    assert (await repos.get(tenant_id)).status is S.DELETED


async def _listed(repos: Repositories, status: TenantStatus | None) -> set[str]:
    ids: set[str] = set()
    after: PagePosition | None = None
    while True:
        page = await repos.tenants.page(limit=200, status=status, after=after)
        ids |= {tenant.id for tenant in page.items}
        if page.next_after is None:
            return ids
        after = page.next_after


async def test_the_list_shows_deleted_tombstones_only_when_asked(repos: Repositories) -> None:
    deleted = await repos.tenant_in(S.DELETED)
    deleting = await repos.tenant_in(S.DELETING)
    active = await repos.tenant_in(S.ACTIVE)

    default = await _listed(repos, None)
    only_deleted = await _listed(repos, S.DELETED)

    assert {deleting, active} <= default
    assert deleted not in default
    assert deleted in only_deleted
    assert not {deleting, active} & only_deleted


@pytest.mark.parametrize("status", sorted(DELETION_STATUSES), ids=str)
async def test_a_tenant_in_a_deletion_status_is_never_adopted(
    repos: Repositories, status: TenantStatus
) -> None:
    tenant_id = await repos.tenant_in(status, run_id="run-1")
    before = await repos.get(tenant_id)
    spec = TenantSpec(
        id=tenant_id, name="Deleted Co", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )
    adoption = Adoption(replaces_run_id="run-1", actor=ACTOR, reason="retry-provisioning")

    with pytest.raises(TenantOwnedElsewhere):
        await repos.tenants.insert(spec, f"wf-{tenant_id}", "run-2", ["svc"], adoption=adoption)

    after = await repos.get(tenant_id)
    assert (after.status, after.workflow_run_id) == (status, "run-1")
    assert after.updated_at == before.updated_at
    assert EventAction.RUN_ADOPTED not in await repos.actions(tenant_id)


async def test_a_failed_provisioning_restored_from_its_deletion_is_adopted_again(
    repos: Repositories,
) -> None:
    # The other side of the rule above: once restored, retry-provisioning takes it over.
    tenant_id = await repos.tenant_in(S.PROVISIONING, run_id="run-1")
    await repos.schedule(tenant_id, at(1))
    await repos.deletions.restore(tenant_id, ACTOR, None)
    spec = TenantSpec(
        id=tenant_id, name="Deleted Co", storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
    )
    adoption = Adoption(replaces_run_id="run-1", actor=ACTOR, reason="retry-provisioning")

    adopted = await repos.tenants.insert(
        spec, f"wf-{tenant_id}", "run-2", ["backend-service"], adoption=adoption
    )

    assert (adopted.status, adopted.workflow_run_id) == (S.PROVISIONING, "run-2")


async def test_of_twenty_racing_requests_exactly_one_schedules(repos: Repositories) -> None:
    tenant_id = await repos.tenant_in(S.ACTIVE)

    results = await asyncio.gather(
        *(repos.schedule(tenant_id, at(i)) for i in range(1, 21)), return_exceptions=True
    )

    winners = [i + 1 for i, result in enumerate(results) if result is None]
    losers = [result for result in results if result is not None]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(isinstance(result, DeletionConflict) for result in losers)
    tenant = await repos.get(tenant_id)
    assert tenant.status is S.DELETION_SCHEDULED
    assert deletion_of(tenant).requested_at == at(winners[0])
    assert (await repos.actions(tenant_id)).count(EventAction.DELETION_REQUESTED) == 1
    assert (await repos.status_changes(tenant_id)).count((S.ACTIVE, S.DELETION_SCHEDULED)) == 1
