"""All SQL of a tenant's offboarding: scheduling a deletion, restoring, and the purge's progress
(the backup taken, the services torn down) that a resumed deletion reads to skip what is done.

Every write locks the tenant row and applies its status change through the same guarded
transition as provisioning (`tenancy.status.decide`), with its audit events in the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TransitionRefused, append_event, apply_transition
from tenancy.models import BackupRecord, EventAction, StorageMode
from tenancy.status import DELETION_STATUSES, Decision, TenantStatus, decide

# Where restore takes a tenant whose provisioning run was stopped by the deletion: the status
# that run records when it is cancelled, each with its retry.
_STOPPED_TO = {
    TenantStatus.PROVISIONING: TenantStatus.PROVISION_ERROR,
    TenantStatus.MIGRATING: TenantStatus.MIGRATION_ERROR,
}


class TenantMissing(Exception):
    """No tenant row with this id."""


class DeletionConflict(Exception):
    """The tenant's deletion is already scheduled, under way or done, or a move is under way."""

    def __init__(self, tenant_id: str, status: TenantStatus) -> None:
        why = (
            "a move is under way"
            if status is TenantStatus.MOVING
            else "its deletion was already asked"
        )
        super().__init__(f"tenant {tenant_id} is {status.value}; {why}")
        self.status = status


class RestoreRefused(Exception):
    """The tenant is not in DELETION_SCHEDULED: restored already, its purge started, or no
    deletion was asked."""

    def __init__(self, tenant_id: str, status: TenantStatus) -> None:
        super().__init__(f"tenant {tenant_id} is {status.value}; restore needs DELETION_SCHEDULED")
        self.status = status


@dataclass(frozen=True)
class DeletionProgress:
    """What the purge of a tenant has done so far, as its row records it."""

    status: TenantStatus
    storage_mode: StorageMode
    requested_at: datetime | None
    purge_at: datetime | None
    backup: BackupRecord | None
    torn_down: frozenset[str]


async def _lock(conn: AsyncConnection[Any], tenant_id: str) -> TenantStatus:
    cur = await conn.execute("SELECT status FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,))
    row = await cur.fetchone()
    if row is None:
        raise TenantMissing(tenant_id)
    return TenantStatus(row[0])


async def _status(conn: AsyncConnection[Any], tenant_id: str) -> TenantStatus:
    cur = await conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is None:
        raise TenantMissing(tenant_id)
    return TenantStatus(row[0])


class DeletionRepository:
    """Guarded writes and reads of tenants' deletions."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def schedule(
        self,
        tenant_id: str,
        *,
        requested_by: str,
        reason: str | None,
        requested_at: datetime,
        purge_at: datetime,
    ) -> None:
        """Move the tenant to DELETION_SCHEDULED with its request, and remember where restore
        takes it back to. A repeat of the same request (same `requested_at`: a retried
        activity) is a no-op; any other request for a tenant already in a deletion status is a
        `DeletionConflict`."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await _lock(conn, tenant_id)
            if current is TenantStatus.MOVING:
                # Asked while its move began (the API checked before): the move ends first.
                raise DeletionConflict(tenant_id, current)
            if current in DELETION_STATUSES:
                cur = await conn.execute(
                    "SELECT deletion_requested_at FROM tenants WHERE id = %s", (tenant_id,)
                )
                row = await cur.fetchone()
                if current is TenantStatus.DELETION_SCHEDULED and row and row[0] == requested_at:
                    return
                raise DeletionConflict(tenant_id, current)
            await conn.execute(
                """
                UPDATE tenants
                SET deletion_requested_at = %s, deletion_requested_by = %s,
                    deletion_reason = %s, deletion_purge_at = %s,
                    deletion_previous_status = %s, deletion_backup = NULL,
                    deletion_torn_down = '{}'
                WHERE id = %s
                """,
                (
                    requested_at,
                    requested_by,
                    reason,
                    purge_at,
                    _STOPPED_TO.get(current, current).value,
                    tenant_id,
                ),
            )
            await append_event(
                conn, tenant_id, requested_by, EventAction.DELETION_REQUESTED, reason=reason
            )
            await apply_transition(
                conn, tenant_id, current, TenantStatus.DELETION_SCHEDULED, reason, requested_by
            )

    async def restore(
        self,
        tenant_id: str,
        actor: str,
        reason: str | None,
        requested_at: datetime | None = None,
    ) -> TenantStatus:
        """Take a tenant in DELETION_SCHEDULED back to the status it had when its deletion was
        asked, forgetting the request; returns that status. `TransitionRefused` from any other
        status (a purge that has started), and, with `requested_at`, for a deletion other than
        that one (a late restore of an earlier deletion never cancels a newer one)."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await _lock(conn, tenant_id)
            cur = await conn.execute(
                "SELECT deletion_previous_status, deletion_requested_at FROM tenants WHERE id = %s",
                (tenant_id,),
            )
            row = await cur.fetchone()
            previous = TenantStatus(row[0]) if row and row[0] else TenantStatus.ACTIVE
            if (
                current is TenantStatus.DELETION_SCHEDULED
                and requested_at is not None
                and row is not None
                and row[1] != requested_at
            ):
                raise TransitionRefused(tenant_id, current, previous)
            decision = decide(current, previous, restoring=True)
            if decision is Decision.REFUSE:
                raise TransitionRefused(tenant_id, current, previous)
            if decision is Decision.NO_OP:
                return previous
            await append_event(
                conn, tenant_id, actor, EventAction.DELETION_CANCELLED, reason=reason
            )
            await apply_transition(conn, tenant_id, current, previous, "restored", actor)
            # deletion_previous_status stays (the next schedule overwrites it): a retried
            # restore then finds the tenant already where it points and is a no-op, where
            # the default (ACTIVE) would refuse a tenant restored to an error status.
            await conn.execute(
                """
                UPDATE tenants
                SET deletion_requested_at = NULL, deletion_requested_by = NULL,
                    deletion_reason = NULL, deletion_purge_at = NULL,
                    deletion_backup = NULL, deletion_torn_down = '{}'
                WHERE id = %s
                """,
                (tenant_id,),
            )
        return previous

    async def take_restore(self, tenant_id: str, actor: str, reason: str | None) -> TenantStatus:
        """An operator's restore: of concurrent ones exactly one is taken. One guarded write
        moves the tenant out of DELETION_SCHEDULED (only from there) back to the status it had
        when its deletion was asked, forgetting the request, with its DELETION_CANCELLED and
        status events in the same transaction; returns that status. `RestoreRefused` for every
        other request (restored already, the purge started, no deletion), `TenantMissing`
        without a row. The deletion's run, told afterwards, finds the restore done."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                UPDATE tenants
                SET status = coalesce(deletion_previous_status, %(active)s),
                    status_reason = 'restored', updated_at = clock_timestamp(),
                    deletion_requested_at = NULL, deletion_requested_by = NULL,
                    deletion_reason = NULL, deletion_purge_at = NULL,
                    deletion_backup = NULL, deletion_torn_down = '{}'
                WHERE id = %(id)s AND status = %(scheduled)s
                RETURNING status
                """,
                {
                    "id": tenant_id,
                    "active": TenantStatus.ACTIVE.value,
                    "scheduled": TenantStatus.DELETION_SCHEDULED.value,
                },
            )
            row = await cur.fetchone()
            if row is None:
                raise RestoreRefused(tenant_id, await _status(conn, tenant_id))
            previous = TenantStatus(row[0])
            # The status rule has the last word: raising here rolls the write back.
            if decide(TenantStatus.DELETION_SCHEDULED, previous, restoring=True) is not (
                Decision.APPLY
            ):
                raise TransitionRefused(tenant_id, TenantStatus.DELETION_SCHEDULED, previous)
            await append_event(
                conn, tenant_id, actor, EventAction.DELETION_CANCELLED, reason=reason
            )
            await append_event(
                conn,
                tenant_id,
                actor,
                EventAction.STATUS_CHANGED,
                TenantStatus.DELETION_SCHEDULED,
                previous,
                "restored",
            )
        return previous

    async def progress(self, tenant_id: str) -> DeletionProgress:
        """The tenant's status and what its purge has done; `TenantMissing` without a row."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT status, storage_mode, deletion_requested_at, deletion_purge_at,
                       deletion_backup, deletion_torn_down
                FROM tenants WHERE id = %s
                """,
                (tenant_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise TenantMissing(tenant_id)
        status, mode, requested_at, purge_at, backup, torn_down = row
        return DeletionProgress(
            status=TenantStatus(status),
            storage_mode=StorageMode(mode),
            requested_at=requested_at,
            purge_at=purge_at,
            backup=BackupRecord.model_validate(backup) if backup else None,
            torn_down=frozenset(torn_down),
        )

    async def record_backup(self, tenant_id: str, backup: BackupRecord, actor: str) -> bool:
        """Keep the purge's backup and write its BACKUP_TAKEN event, once per deletion: False
        when a backup was already recorded (a retried activity)."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                UPDATE tenants SET deletion_backup = %s, updated_at = clock_timestamp()
                WHERE id = %s AND deletion_backup IS NULL
                RETURNING id
                """,
                (Jsonb(backup.model_dump(by_alias=True)), tenant_id),
            )
            if await cur.fetchone() is None:
                return False
            await append_event(
                conn,
                tenant_id,
                actor,
                EventAction.BACKUP_TAKEN,
                reason=(f"path={backup.path} sizeBytes={backup.size_bytes} sha256={backup.sha256}"),
            )
        return True

    async def record_torn_down(self, tenant_id: str, service: str) -> None:
        """Remember that `service` removed its part of the tenant's storage."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE tenants SET deletion_torn_down = array_append(deletion_torn_down, %s)
                WHERE id = %s AND NOT (%s = ANY(deletion_torn_down))
                """,
                (service, tenant_id, service),
            )
