"""All SQL on the platform's metadata tables. Values are always bound parameters."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from infra.db.directory import LOCATION_JSON
from infra.db.outbox import Backlog, outbox_backlog, outbox_params
from infra.db.paging import Page, PagePosition
from infra.events.cloudevents import tenant_event
from tenancy.models import (
    BackupRecord,
    Deletion,
    EventAction,
    MigrationRecord,
    Move,
    SlaTier,
    StorageMode,
    Tenant,
    TenantEvent,
    TenantSpec,
)
from tenancy.naming import workflow_actor
from tenancy.status import (
    ALLOWED_SOURCES,
    DELETION_STATUSES,
    Decision,
    MigrationStatus,
    TenantStatus,
    decide,
)

_TENANT_COLUMNS = """
    id, name, storage_mode, sla_tier, status, status_reason, jdbc_url, storage_server, workflow_id,
    workflow_run_id, created_by, created_at, updated_at, deletion_requested_at,
    deletion_requested_by, deletion_reason, deletion_purge_at, deletion_backup,
    move_requested_at, move_requested_by, move_reason, move_from_server, move_to_server, move_phase
"""


def _deletion(row: dict[str, Any]) -> Deletion | None:
    """The row's deletion request (its columns are taken out of `row`), or None."""
    requested_at = row.pop("deletion_requested_at")
    requested_by = row.pop("deletion_requested_by")
    reason = row.pop("deletion_reason")
    purge_at = row.pop("deletion_purge_at")
    backup = row.pop("deletion_backup")
    if requested_at is None or purge_at is None:
        return None
    return Deletion(
        requested_at=requested_at,
        requested_by=requested_by or "unknown",
        reason=reason,
        purge_at=purge_at,
        backup=BackupRecord.model_validate(backup) if backup else None,
    )


def _move(row: dict[str, Any]) -> Move | None:
    """The row's move (its columns are taken out of `row`), or None: present only while the
    tenant is MOVING."""
    values = {name: row.pop(f"move_{name}") for name in _MOVE_FIELDS}
    if row["status"] != TenantStatus.MOVING.value or values["requested_at"] is None:
        return None
    return Move(**values)


_MOVE_FIELDS = ("requested_at", "requested_by", "reason", "from_server", "to_server", "phase")


class TenantOwnedElsewhere(Exception):
    """A tenant row with this id exists and belongs to another workflow run."""


@dataclass(frozen=True)
class Adoption:
    """A new run taking the tenant over from the closed run `replaces_run_id`."""

    replaces_run_id: str
    actor: str
    reason: str


class TransitionRefused(Exception):
    """The tenant is in a state from which the requested transition is not allowed."""

    def __init__(self, tenant_id: str, current: TenantStatus | None, target: TenantStatus) -> None:
        super().__init__(f"tenant {tenant_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


async def append_event(
    conn: AsyncConnection[Any],
    tenant_id: str,
    actor: str,
    action: EventAction,
    old: TenantStatus | None = None,
    new: TenantStatus | None = None,
    reason: str | None = None,
    key: str | None = None,
) -> None:
    """Append one audit event and its lifecycle event (the outbox row) in one statement; with
    a `key`, only the first event of that key is written, and only it goes to the outbox. The
    event carries the tenant's `epoch` and location as the row stands in this transaction (after
    the writes made in it before this call)."""
    pending = tenant_event(tenant_id, action, actor, old, new, reason)
    await conn.execute(
        f"""
        WITH audit AS (
            INSERT INTO tenant_events
                (tenant_id, actor, action, old_status, new_status, reason, event_key)
            VALUES (%(tenant)s, %(actor)s, %(action)s, %(old)s, %(new)s, %(reason)s, %(key)s)
            ON CONFLICT (event_key) WHERE event_key IS NOT NULL DO NOTHING
            RETURNING occurred_at
        )
        INSERT INTO event_outbox (id, family, subject_key, name, event)
        SELECT %(id)s, %(family)s, %(tenant)s, %(name)s,
               %(event)s::jsonb || jsonb_build_object(
                   'time', to_char(audit.occurred_at AT TIME ZONE 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'data', (%(event)s::jsonb -> 'data') || jsonb_build_object(
                       'storageMode', t.storage_mode, 'slaTier', t.sla_tier,
                       'epoch', t.epoch, 'location', {LOCATION_JSON}))
        FROM audit LEFT JOIN tenants t ON t.id = %(tenant)s
        """,
        {
            "tenant": tenant_id,
            "actor": actor,
            "action": action.value,
            "old": old.value if old else None,
            "new": new.value if new else None,
            "reason": reason,
            "key": key,
            **outbox_params(pending),
        },
    )


async def apply_transition(
    conn: AsyncConnection[Any],
    tenant_id: str,
    current: TenantStatus,
    target: TenantStatus,
    reason: str | None,
    actor: str,
) -> None:
    """Write an allowed transition and its event; the caller holds the row lock."""
    # The row is locked, so this matches; the guard stays as the invariant's last line.
    await conn.execute(
        """
        UPDATE tenants
        SET status = %s, status_reason = %s, updated_at = clock_timestamp(),
            -- A DELETED tombstone points at no storage.
            jdbc_url = CASE WHEN %s THEN NULL ELSE jdbc_url END
        WHERE id = %s AND status = ANY(%s)
        """,
        (
            target.value,
            reason,
            target is TenantStatus.DELETED,
            tenant_id,
            [s.value for s in ALLOWED_SOURCES[target]],
        ),
    )
    await append_event(conn, tenant_id, actor, EventAction.STATUS_CHANGED, current, target, reason)


class TenantLeaving(Exception):
    """The tenant's deletion was asked: its storage must not be created any more."""


_MIGRATION_COLUMNS = ("service", "status", "version", "attempts", "last_error", "updated_at")
# One tenant and its migrations in one statement (one snapshot): a row per migration, the
# tenant's columns repeated, its migration columns null when it has none.
_TENANT_NAMES = [name.strip() for name in _TENANT_COLUMNS.split(",")]
_TENANT_WITH_MIGRATIONS = f"""
    SELECT {", ".join("t." + c for c in _TENANT_NAMES)},
           {", ".join("m." + c for c in _MIGRATION_COLUMNS)}
    FROM tenants t LEFT JOIN tenant_migrations m ON m.tenant_id = t.id
    WHERE t.id = %s ORDER BY m.service
"""
_TENANT_WIDTH = len(_TENANT_NAMES)


@dataclass(frozen=True)
class TenantSnapshot:
    """One tenant's columns and its migrations' as read in one statement, and their `version`:
    a digest of every value the tenant's answer is made of, so it changes whenever the answer
    does, and is known without building the answer (the ETag of `GET /api/tenants/{id}`)."""

    rows: list[tuple[Any, ...]]

    @property
    def version(self) -> str:
        """The digest of the values read (their reprs: a datetime, a dict and a None differ)."""
        return hashlib.blake2b(repr(self.rows).encode(), digest_size=16).hexdigest()

    def tenant(self) -> Tenant:
        """The tenant these values make."""
        row = dict(zip(_TENANT_NAMES, self.rows[0][:_TENANT_WIDTH], strict=True))
        migrations = [
            MigrationRecord(**dict(zip(_MIGRATION_COLUMNS, r[_TENANT_WIDTH:], strict=True)))
            for r in self.rows
            if r[_TENANT_WIDTH] is not None
        ]
        deletion = _deletion(row)  # takes its columns out of `row`
        move = _move(row)  # likewise
        return Tenant(**row, deletion=deletion, move=move, migrations=migrations)


class TenantRepository:
    """Reads and guarded writes of tenants and their per-service migration records.

    `reads`, when given, is an autocommit pool for the reads made of one statement: no
    transaction to end, so no COMMIT round trip per read (the API's many GETs)."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], reads: AsyncConnectionPool[Any] | None = None
    ) -> None:
        self._pool = pool
        self._reads = reads or pool

    async def ping(self) -> None:
        """Raise unless the metadata database answers."""
        async with self._pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def event_backlog(self) -> Backlog:
        """The lifecycle events not yet published (see `infra.db.outbox`)."""
        return await outbox_backlog(self._pool)

    async def insert(
        self,
        spec: TenantSpec,
        workflow_id: str,
        run_id: str,
        services: Sequence[str],
        created_by: str | None = None,
        adoption: Adoption | None = None,
    ) -> Tenant:
        """Insert the tenant in PROVISIONING with PENDING migrations; a re-run finds its row.

        With `adoption`, a row owned by `adoption.replaces_run_id` is handed to `run_id`
        (compare-and-set on the owning run, so of two adopters one wins), a failed
        provisioning starts over in PROVISIONING, and a RUN_ADOPTED event names the actor.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                INSERT INTO tenants (id, name, storage_mode, sla_tier, status,
                                     workflow_id, workflow_run_id, created_by)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO NOTHING
                RETURNING id
                """,
                (
                    spec.id,
                    spec.name,
                    spec.storage_mode.value,
                    spec.sla_tier.value,
                    TenantStatus.PROVISIONING.value,
                    workflow_id,
                    run_id,
                    created_by,
                ),
            )
            if await cur.fetchone() is not None:
                await append_event(
                    conn,
                    spec.id,
                    created_by or workflow_actor(workflow_id),
                    EventAction.CREATED,
                    new=TenantStatus.PROVISIONING,
                )
            cur = await conn.execute(
                "SELECT workflow_run_id, status FROM tenants WHERE id = %s FOR UPDATE", (spec.id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise TenantOwnedElsewhere(spec.id)
            owner, status = row[0], TenantStatus(row[1])
            if owner != run_id:
                if adoption is None or owner != adoption.replaces_run_id:
                    raise TenantOwnedElsewhere(spec.id)
                # A tenant being deleted (or deleted) is never provisioned again.
                if status in DELETION_STATUSES:
                    raise TenantOwnedElsewhere(spec.id)
                await self._adopt(conn, spec.id, run_id, status, adoption)
            await conn.cursor().executemany(
                """
                INSERT INTO tenant_migrations (tenant_id, service, status)
                VALUES (%s, %s, %s)
                ON CONFLICT (tenant_id, service) DO NOTHING
                """,
                [(spec.id, service, MigrationStatus.PENDING.value) for service in services],
            )
        tenant = await self.get(spec.id)
        assert tenant is not None
        return tenant

    async def _adopt(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        run_id: str,
        status: TenantStatus,
        adoption: Adoption,
    ) -> None:
        await conn.execute(
            """
            UPDATE tenants SET workflow_run_id = %s, updated_at = clock_timestamp()
            WHERE id = %s AND workflow_run_id = %s
            """,
            (run_id, tenant_id, adoption.replaces_run_id),
        )
        await append_event(
            conn,
            tenant_id,
            adoption.actor,
            EventAction.RUN_ADOPTED,
            reason=f"{adoption.reason}: run {run_id} replaces {adoption.replaces_run_id}",
        )
        if status is TenantStatus.PROVISION_ERROR:
            await apply_transition(
                conn, tenant_id, status, TenantStatus.PROVISIONING, adoption.reason, adoption.actor
            )

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with its migration records, or None."""
        snapshot = await self.snapshot(tenant_id)
        return snapshot.tenant() if snapshot else None

    async def snapshot(self, tenant_id: str) -> TenantSnapshot | None:
        """The tenant's values and its migrations', read in one statement, or None."""
        async with self._reads.connection() as conn, conn.cursor() as cur:
            await cur.execute(_TENANT_WITH_MIGRATIONS, (tenant_id,))
            rows = await cur.fetchall()
        return TenantSnapshot(rows) if rows else None

    async def page(
        self,
        *,
        limit: int,
        status: TenantStatus | None = None,
        sla_tier: SlaTier | None = None,
        storage_mode: StorageMode | None = None,
        id_prefix: str | None = None,
        after: PagePosition | None = None,
    ) -> Page:
        """Up to `limit` tenants, oldest first, strictly after `after`, DELETED tombstones only
        when `status` asks for them; only rows whose insert
        has ended for good (below the snapshot's xmin, see `infra.db.paging`), so a position
        handed out is never passed by a row that commits later."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                """
                -- The position's xid goes out as text under another name: ORDER BY
                -- insert_xid would otherwise sort that text (99 after 100, and every row
                -- after the counter passes a power of ten), not the numbers the cursor
                -- compares, and pages would skip rows.
                SELECT insert_xid::text AS position_xid, created_at, id FROM tenants
                WHERE insert_xid < pg_snapshot_xmin(pg_current_snapshot())
                  AND (%(status)s::text IS NULL AND status <> 'DELETED' OR status = %(status)s)
                  AND (%(tier)s::text IS NULL OR sla_tier = %(tier)s)
                  AND (%(mode)s::text IS NULL OR storage_mode = %(mode)s)
                  AND (%(prefix)s::text IS NULL OR starts_with(id, %(prefix)s))
                  AND (%(after_xid)s::xid8 IS NULL
                       OR (insert_xid, created_at, id)
                          > (%(after_xid)s::xid8, %(after_created)s, %(after_id)s::text))
                ORDER BY insert_xid, created_at, id
                LIMIT %(limit)s
                """,
                {
                    "status": status.value if status else None,
                    "tier": sla_tier.value if sla_tier else None,
                    "mode": storage_mode.value if storage_mode else None,
                    "prefix": id_prefix or None,
                    "after_xid": str(after.insert_xid) if after else None,
                    "after_created": after.created_at if after else None,
                    "after_id": after.tenant_id if after else None,
                    "limit": limit + 1,
                },
            )
            keys = [
                PagePosition(insert_xid=int(xid), created_at=created, tenant_id=tenant_id)
                for xid, created, tenant_id in await cur.fetchall()
            ]
        shown = keys[:limit]
        if not shown:
            return Page(items=[], next_after=None)
        # The rows are read again for their columns; one that changed status in between
        # no longer matches the filter and is left out of this page.
        rows = await self._select(
            f"""
            SELECT {_TENANT_COLUMNS} FROM tenants
            WHERE id = ANY(%(ids)s)
              AND (%(status)s::text IS NULL AND status <> 'DELETED' OR status = %(status)s)
            """,
            {"ids": [key.tenant_id for key in shown], "status": status.value if status else None},
        )
        found = {tenant.id: tenant for tenant in rows}
        return Page(
            items=[found[key.tenant_id] for key in shown if key.tenant_id in found],
            next_after=shown[-1] if len(keys) > limit else None,
        )

    async def transition(
        self, tenant_id: str, target: TenantStatus, reason: str | None, actor: str
    ) -> TenantStatus:
        """Move to `target` only from its allowed sources, recording the event in the same
        transaction; a repeated transition is a no-op and records nothing."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,)
            )
            row = await cur.fetchone()
            current = TenantStatus(row[0]) if row else None
            decision = decide(current, target)
            if decision is Decision.NO_OP:
                return target
            if decision is Decision.REFUSE:
                raise TransitionRefused(tenant_id, current, target)
            assert current is not None
            await apply_transition(conn, tenant_id, current, target, reason, actor)
        return target

    async def all_with_prefix(self, id_prefix: str = "") -> list[Tenant]:
        """Every tenant whose id starts with `id_prefix` (all of them by default), oldest first."""
        return await self._select(
            f"""
            SELECT {_TENANT_COLUMNS} FROM tenants
            WHERE starts_with(id, %s) ORDER BY created_at, id
            """,
            [id_prefix],
        )

    async def retained_storage(self, id_prefix: str = "") -> list[tuple[str, str]]:
        """(tenant id, server) of each source a move kept after its switch and that is not
        dropped yet (`infra.db.tenant_moves` writes them), of the tenants whose id starts
        with `id_prefix`: storage that has its reason to be, for the reconciler."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT tenant_id, server FROM retained_storage
                WHERE dropped_at IS NULL AND starts_with(tenant_id, %s)
                ORDER BY id
                """,
                (id_prefix,),
            )
            return [(tenant_id, server) for tenant_id, server in await cur.fetchall()]

    async def count_by_status(self) -> dict[TenantStatus, int]:
        """How many tenants are in each status; every status is present, zero included."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT status, count(*) FROM tenants GROUP BY status")
            counts = {TenantStatus(status): int(count) for status, count in await cur.fetchall()}
        return {status: counts.get(status, 0) for status in TenantStatus}

    async def status_counts(self) -> dict[TenantStatus, tuple[int, timedelta]]:
        """Every status's tenants, and how long the longest-waiting of them has been in it
        (zero when none is), in one statement; every status is present.

        A tenant entered its status when the audit trail's latest status event was written
        (the CREATED or STATUS_CHANGED event every status change appends in its transaction).
        Not `updated_at`: writes within a status move it too (a storage creation's retries
        note their reason on a PROVISIONING tenant, a move records its phases), so a tenant
        stuck retrying would look fresh. A row whose trail lacks its status falls back to
        `updated_at`."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT s.status, count(t.id),
                       coalesce(greatest(clock_timestamp() - min(t.since), interval '0'),
                                interval '0')
                FROM unnest(%s::text[]) AS s(status)
                LEFT JOIN (
                    SELECT t.id, t.status,
                           CASE WHEN e.new_status = t.status THEN e.occurred_at
                                ELSE t.updated_at END AS since
                    FROM tenants t
                    LEFT JOIN LATERAL (
                        SELECT new_status, occurred_at FROM tenant_events
                        WHERE tenant_id = t.id AND new_status IS NOT NULL
                        ORDER BY id DESC LIMIT 1
                    ) e ON true
                ) t ON t.status = s.status
                GROUP BY s.status
                """,
                ([status.value for status in TenantStatus],),
            )
            rows = await cur.fetchall()
        return {TenantStatus(status): (int(count), waited) for status, count, waited in rows}

    async def record_event(
        self,
        tenant_id: str,
        actor: str,
        action: EventAction,
        reason: str | None = None,
        key: str | None = None,
    ) -> None:
        """Append an operator action (e.g. a retry request) to the audit trail; with a `key`
        (a step that may run again), once per key."""
        async with self._pool.connection() as conn:
            await append_event(conn, tenant_id, actor, action, reason=reason, key=key)

    async def events(self, tenant_id: str) -> list[TenantEvent]:
        """The tenant's audit trail, oldest first."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT id, tenant_id, occurred_at, actor, action, old_status, new_status, reason
                FROM tenant_events WHERE tenant_id = %s ORDER BY id
                """,
                (tenant_id,),
            )
            return [TenantEvent(**row) for row in await cur.fetchall()]

    @asynccontextmanager
    async def claim_storage(self, tenant_id: str) -> AsyncIterator[None]:
        """Hold the tenant's row (FOR SHARE) while its storage is created. A deletion is
        recorded under FOR UPDATE, so it waits for the creation and its drop finds the storage;
        a creation that comes after the request (a cancelled provisioning run's, outliving its
        run) raises `TenantLeaving` instead of creating storage nothing would drop."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status FROM tenants WHERE id = %s FOR SHARE", (tenant_id,)
            )
            row = await cur.fetchone()
            if row is not None and TenantStatus(row[0]) in DELETION_STATUSES:
                raise TenantLeaving(tenant_id)
            yield

    async def set_jdbc_url(self, tenant_id: str, jdbc_url: str) -> None:
        """Record where the tenant's storage is, unless its deletion was asked meanwhile (a
        DELETED tombstone points at no storage)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE tenants SET jdbc_url = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status <> ALL(%s)
                """,
                (jdbc_url, tenant_id, [s.value for s in DELETION_STATUSES]),
            )

    async def note_provisioning_problem(
        self, tenant_id: str, reason: str, *, wait: float = 2.0
    ) -> bool:
        """Show why provisioning is being retried in `status_reason`, only while the tenant is
        still PROVISIONING (the next transition replaces it); False when it is not. Waits at
        most `wait` seconds for a connection: the note is best effort."""
        async with self._pool.connection(timeout=wait) as conn:
            cur = await conn.execute(
                """
                UPDATE tenants SET status_reason = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status = %s
                RETURNING id
                """,
                (reason, tenant_id, TenantStatus.PROVISIONING.value),
            )
            return await cur.fetchone() is not None

    async def migration_call_failed(
        self, tenant_id: str, service: str, attempt_key: str, error: str
    ) -> int:
        """Keep the error of a call that reached the service (or timed out talking to it)
        and count it against `attempt_key`, the logical call it belongs to; return how many
        calls of that key have failed. A new key starts from one; a service that already
        succeeded is left alone (0)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                INSERT INTO tenant_migrations AS m
                    (tenant_id, service, status, last_error, attempt_key, key_failures)
                VALUES (%(tenant)s, %(service)s, %(status)s, %(error)s, %(key)s, 1)
                ON CONFLICT (tenant_id, service) DO UPDATE
                SET status = EXCLUDED.status,
                    last_error = EXCLUDED.last_error,
                    key_failures = CASE WHEN m.attempt_key = EXCLUDED.attempt_key
                                        THEN m.key_failures + 1 ELSE 1 END,
                    attempt_key = EXCLUDED.attempt_key,
                    updated_at = clock_timestamp()
                WHERE m.status <> 'SUCCEEDED'
                RETURNING key_failures
                """,
                {
                    "tenant": tenant_id,
                    "service": service,
                    "status": MigrationStatus.RUNNING.value,
                    "error": error,
                    "key": attempt_key,
                },
            )
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def fleet_migration_succeeded(
        self, tenant_id: str, service: str, version: str, actor: str
    ) -> None:
        """A rollout's call applied `version` (or found it applied): the record is SUCCEEDED at
        that version, and a version that changed is an event of the tenant."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                SELECT version FROM tenant_migrations
                WHERE tenant_id = %s AND service = %s FOR UPDATE
                """,
                (tenant_id, service),
            )
            row = await cur.fetchone()
            old = row[0] if row else None
            await conn.execute(
                """
                INSERT INTO tenant_migrations AS m
                    (tenant_id, service, status, version, attempts, last_error)
                VALUES (%(tenant)s, %(service)s, 'SUCCEEDED', %(version)s, 1, NULL)
                ON CONFLICT (tenant_id, service) DO UPDATE
                SET status = 'SUCCEEDED', version = EXCLUDED.version, attempts = m.attempts + 1,
                    last_error = NULL, updated_at = clock_timestamp()
                """,
                {"tenant": tenant_id, "service": service, "version": version},
            )
            if old != version:
                await append_event(
                    conn,
                    tenant_id,
                    actor,
                    EventAction.VERSION_CHANGED,
                    reason=f"{service}: {old} -> {version}",
                )

    async def fleet_migration_failed(self, tenant_id: str, service: str, error: str) -> None:
        """A rollout's call failed for good: the record is FAILED with the error and keeps the
        version the service still runs; the tenant's status is left as it is."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO tenant_migrations AS m
                    (tenant_id, service, status, attempts, last_error)
                VALUES (%(tenant)s, %(service)s, 'FAILED', 1, %(error)s)
                ON CONFLICT (tenant_id, service) DO UPDATE
                SET status = 'FAILED', attempts = m.attempts + 1, last_error = EXCLUDED.last_error,
                    updated_at = clock_timestamp()
                """,
                {"tenant": tenant_id, "service": service, "error": error},
            )

    async def migration_attempt_started(self, tenant_id: str, service: str) -> None:
        """Count one more attempt; a service that already succeeded is left alone."""
        await self._upsert_migration(
            tenant_id,
            service,
            MigrationStatus.RUNNING,
            attempts_delta=1,
            version=None,
            error=None,
            keep_error=True,
        )

    async def migration_attempt_failed(self, tenant_id: str, service: str, error: str) -> None:
        """Keep the error of an attempt that will be retried."""
        await self._upsert_migration(
            tenant_id, service, MigrationStatus.RUNNING, attempts_delta=0, version=None, error=error
        )

    async def migration_succeeded(self, tenant_id: str, service: str, version: str) -> None:
        """Record the version the service applied."""
        await self._upsert_migration(
            tenant_id,
            service,
            MigrationStatus.SUCCEEDED,
            attempts_delta=0,
            version=version,
            error=None,
        )

    async def activate_if_migrated(self, tenant_id: str, actor: str) -> bool:
        """Move a MIGRATING tenant to ACTIVE when every one of its services has succeeded;
        True when it is ACTIVE afterwards. Of calls finishing at once, the last to record its
        success sees them all (each looks after its own commit); a repeat is a no-op."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT t.status = %s AND NOT EXISTS (
                    SELECT 1 FROM tenant_migrations m
                    WHERE m.tenant_id = t.id AND m.status <> %s)
                FROM tenants t WHERE t.id = %s
                """,
                (TenantStatus.MIGRATING.value, MigrationStatus.SUCCEEDED.value, tenant_id),
            )
            row = await cur.fetchone()
        if row is None or not row[0]:
            return False
        try:
            status = await self.transition(tenant_id, TenantStatus.ACTIVE, None, actor)
        except TransitionRefused:
            return False
        return status is TenantStatus.ACTIVE

    async def migration_failed(self, tenant_id: str, service: str, error: str) -> None:
        """Mark a service as failed once its retries are spent or it refused the call."""
        await self._upsert_migration(
            tenant_id, service, MigrationStatus.FAILED, attempts_delta=0, version=None, error=error
        )

    async def _upsert_migration(
        self,
        tenant_id: str,
        service: str,
        status: MigrationStatus,
        *,
        attempts_delta: int,
        version: str | None,
        error: str | None,
        keep_error: bool = False,
    ) -> None:
        # A SUCCEEDED record is final: a late attempt that lost a race must not undo it.
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO tenant_migrations AS m
                    (tenant_id, service, status, version, attempts, last_error)
                VALUES (%(tenant)s, %(service)s, %(status)s, %(version)s, %(delta)s, %(error)s)
                ON CONFLICT (tenant_id, service) DO UPDATE
                SET status = EXCLUDED.status,
                    version = COALESCE(EXCLUDED.version, m.version),
                    attempts = m.attempts + %(delta)s,
                    last_error = CASE WHEN %(keep_error)s THEN m.last_error
                                      ELSE EXCLUDED.last_error END,
                    updated_at = clock_timestamp()
                WHERE m.status <> 'SUCCEEDED'
                """,
                {
                    "tenant": tenant_id,
                    "service": service,
                    "status": status.value,
                    "version": version,
                    "delta": attempts_delta,
                    "error": error,
                    "keep_error": keep_error,
                },
            )

    async def _select(self, query: str, params: Sequence[Any] | dict[str, Any]) -> list[Tenant]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
            if not rows:
                return []
            await cur.execute(
                """
                SELECT tenant_id, service, status, version, attempts, last_error, updated_at
                FROM tenant_migrations WHERE tenant_id = ANY(%s) ORDER BY tenant_id, service
                """,
                ([r["id"] for r in rows],),
            )
            by_tenant: dict[str, list[MigrationRecord]] = {}
            for m in await cur.fetchall():
                by_tenant.setdefault(m.pop("tenant_id"), []).append(MigrationRecord(**m))
        tenants = []
        for row in rows:
            deletion = _deletion(row)
            move = _move(row)
            tenants.append(
                Tenant(**row, deletion=deletion, move=move, migrations=by_tenant.get(row["id"], []))
            )
        return tenants
