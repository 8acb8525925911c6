"""All SQL on the platform's metadata tables. Values are always bound parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tenancy.models import (
    EventAction,
    MigrationRecord,
    SlaTier,
    Tenant,
    TenantEvent,
    TenantSpec,
)
from tenancy.paging import Page, PagePosition
from tenancy.status import ALLOWED_SOURCES, Decision, MigrationStatus, TenantStatus, decide

_TENANT_COLUMNS = """
    id, name, storage_mode, sla_tier, status, status_reason, jdbc_url, workflow_id,
    created_by, created_at, updated_at
"""


class TenantOwnedElsewhere(Exception):
    """A tenant row with this id exists and belongs to another workflow run."""


class TransitionRefused(Exception):
    """The tenant is in a state from which the requested transition is not allowed."""

    def __init__(self, tenant_id: str, current: TenantStatus | None, target: TenantStatus) -> None:
        super().__init__(f"tenant {tenant_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


def workflow_actor(workflow_id: str) -> str:
    """How automatic steps appear in the audit trail."""
    return f"workflow:{workflow_id}"


async def _append_event(
    conn: AsyncConnection[Any],
    tenant_id: str,
    actor: str,
    action: EventAction,
    old: TenantStatus | None = None,
    new: TenantStatus | None = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO tenant_events (tenant_id, actor, action, old_status, new_status, reason)
        VALUES (%s, %s, %s, %s, %s, %s)
        """,
        (
            tenant_id,
            actor,
            action.value,
            old.value if old else None,
            new.value if new else None,
            reason,
        ),
    )


class TenantRepository:
    """Reads and guarded writes of tenants and their per-service migration records."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """Raise unless the metadata database answers."""
        async with self._pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def insert(
        self,
        spec: TenantSpec,
        workflow_id: str,
        run_id: str,
        services: Sequence[str],
        created_by: str | None = None,
    ) -> Tenant:
        """Insert the tenant in PROVISIONING with PENDING migrations; a re-run finds its row."""
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
                await _append_event(
                    conn,
                    spec.id,
                    created_by or workflow_actor(workflow_id),
                    EventAction.CREATED,
                    new=TenantStatus.PROVISIONING,
                )
            cur = await conn.execute(
                "SELECT workflow_run_id FROM tenants WHERE id = %s FOR UPDATE", (spec.id,)
            )
            row = await cur.fetchone()
            if row is None or row[0] != run_id:
                raise TenantOwnedElsewhere(spec.id)
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

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with its migration records, or None."""
        found = await self._select(
            f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = %s", [tenant_id]
        )
        return found[0] if found else None

    async def page(
        self,
        *,
        limit: int,
        status: TenantStatus | None = None,
        sla_tier: SlaTier | None = None,
        after: PagePosition | None = None,
    ) -> Page:
        """Up to `limit` tenants, oldest first, strictly after `after`; only rows whose insert
        has ended for good (below the snapshot's xmin, see `tenancy.paging`), so a position
        handed out is never passed by a row that commits later."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                """
                SELECT insert_xid::text, created_at, id FROM tenants
                WHERE insert_xid < pg_snapshot_xmin(pg_current_snapshot())
                  AND (%(status)s::text IS NULL OR status = %(status)s)
                  AND (%(tier)s::text IS NULL OR sla_tier = %(tier)s)
                  AND (%(after_xid)s::xid8 IS NULL
                       OR (insert_xid, created_at, id)
                          > (%(after_xid)s::xid8, %(after_created)s, %(after_id)s::text))
                ORDER BY insert_xid, created_at, id
                LIMIT %(limit)s
                """,
                {
                    "status": status.value if status else None,
                    "tier": sla_tier.value if sla_tier else None,
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
            WHERE id = ANY(%(ids)s) AND (%(status)s::text IS NULL OR status = %(status)s)
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
            # The row is locked, so this matches; the guard stays as the invariant's last line.
            await conn.execute(
                """
                UPDATE tenants
                SET status = %s, status_reason = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status = ANY(%s)
                """,
                (target.value, reason, tenant_id, [s.value for s in ALLOWED_SOURCES[target]]),
            )
            await _append_event(
                conn, tenant_id, actor, EventAction.STATUS_CHANGED, current, target, reason
            )
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

    async def hand_over(
        self, tenant_id: str, run_id: str, statuses: Sequence[TenantStatus]
    ) -> bool:
        """Give the row to another run of its workflow (the reconciler's restart), only while
        the tenant is in one of `statuses`; False when it is not (it moved meanwhile)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE tenants SET workflow_run_id = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status = ANY(%s)
                RETURNING id
                """,
                (run_id, tenant_id, [s.value for s in statuses]),
            )
            return await cur.fetchone() is not None

    async def count_by_status(self) -> dict[TenantStatus, int]:
        """How many tenants are in each status; every status is present, zero included."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT status, count(*) FROM tenants GROUP BY status")
            counts = {TenantStatus(status): int(count) for status, count in await cur.fetchall()}
        return {status: counts.get(status, 0) for status in TenantStatus}

    async def record_event(
        self, tenant_id: str, actor: str, action: EventAction, reason: str | None = None
    ) -> None:
        """Append an operator action (e.g. a retry request) to the audit trail."""
        async with self._pool.connection() as conn:
            await _append_event(conn, tenant_id, actor, action, reason=reason)

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

    async def set_jdbc_url(self, tenant_id: str, jdbc_url: str) -> None:
        """Record where the tenant's storage is."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE tenants SET jdbc_url = %s, updated_at = clock_timestamp() WHERE id = %s",
                (jdbc_url, tenant_id),
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
        return [Tenant(**row, migrations=by_tenant.get(row["id"], [])) for row in rows]
