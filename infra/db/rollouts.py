"""All SQL of fleet rollouts: creating one with its waves materialised in one transaction,
claiming batches of tenants, recording results, counting, paging, and guarded status changes.

A rollout's tenants are rows (`rollout_tenants`), never a payload: the workflow asks for the next
batch, the activity claims it here (`FOR UPDATE SKIP LOCKED`) and hands back what it did not
finish; a batch first hands back every row of its wave still RUNNING (one batch of a rollout runs
at a time, so those are rows of an attempt that died), so no tenant is lost or left RUNNING.

Each wave's tenants by status are counted by the database (`rollout_wave_counts`, kept by
statement triggers on `rollout_tenants` in the transaction of each change, migration 0012), so
reading a rollout or a page of them never groups its tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infra.db.outbox import outbox_params
from infra.events.cloudevents import rollout_event
from tenancy.rollout_list import RolloutSummary
from tenancy.rollouts import (
    FINAL_ROLLOUT_STATUSES,
    Rollout,
    RolloutAction,
    RolloutCounts,
    RolloutEvent,
    RolloutFailure,
    RolloutRequest,
    RolloutStatus,
    RolloutTenant,
    RolloutTenantStatus,
    WaveSpec,
    WaveStatus,
    WaveView,
)
from tenancy.status import TenantStatus

MAX_FAILURES_SHOWN = 100
# Which status a rollout may move to from which: anything else is refused (409 at the API).
_ROLLOUT_SOURCES: dict[RolloutStatus, frozenset[RolloutStatus]] = {
    RolloutStatus.PAUSED: frozenset({RolloutStatus.RUNNING}),
    RolloutStatus.HALTED: frozenset({RolloutStatus.RUNNING}),
    RolloutStatus.RUNNING: frozenset(
        {RolloutStatus.PAUSED, RolloutStatus.HALTED, RolloutStatus.FAILED}
    ),
    RolloutStatus.CANCELLED: frozenset(
        {RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED}
    ),
    # A pause that lands once the last batch found nothing left to start has nothing to hold
    # back: the run's end then closes the rollout from PAUSED, so the row never stays PAUSED
    # (and, after a resume, RUNNING) under a closed run.
    RolloutStatus.SUCCEEDED: frozenset({RolloutStatus.RUNNING, RolloutStatus.PAUSED}),
    RolloutStatus.FAILED: frozenset({RolloutStatus.RUNNING, RolloutStatus.PAUSED}),
}


class RolloutMissing(Exception):
    """No rollout with this id."""


class RolloutStateRefused(Exception):
    """The rollout's status does not allow the change."""

    def __init__(self, rollout_id: str, current: RolloutStatus, target: RolloutStatus) -> None:
        super().__init__(
            f"rollout {rollout_id} is {current.value}; it cannot become {target.value}"
        )
        self.current = current
        self.target = target


@dataclass(frozen=True)
class ResumePoint:
    """Where a rollout stands by its rows: the first wave with a tenant PENDING or RUNNING (the
    number of waves when none has), the batch number a new run goes on with (the last batch
    that holds RUNNING rows, so it takes them back, else one past every batch), and each wave's
    counts."""

    wave: int
    batch: int
    counts: dict[int, RolloutCounts]


@dataclass(frozen=True)
class Claimed:
    """A tenant claimed for a batch: what its calls need."""

    tenant_id: str
    tenant_status: TenantStatus
    storage_mode: str
    # The server its storage is on (None: never placed, which a rollout's tenant never is).
    storage_server: str | None = None


def _counts(pending: int, running: int, succeeded: int, failed: int, skipped: int) -> RolloutCounts:
    return RolloutCounts(
        total=pending + running + succeeded + failed + skipped,
        pending=pending,
        running=running,
        succeeded=succeeded,
        failed=failed,
        skipped=skipped,
    )


def _waves(rows: list[dict[str, Any]]) -> list[WaveView]:
    """The waves of a rollout from the JSON array `_WAVES` builds."""
    return [
        WaveView(
            name=w["name"],
            status=WaveStatus(w["status"]),
            counts=_counts(w["pending"], w["running"], w["succeeded"], w["failed"], w["skipped"]),
        )
        for w in rows
    ]


def _total(waves: Sequence[WaveView]) -> RolloutCounts:
    return RolloutCounts(
        **{
            field: sum(getattr(w.counts, field) for w in waves)
            for field in RolloutCounts.model_fields
        }
    )


# A rollout's waves in order with their counts, as one JSON array (`r` is the rollout's row).
_WAVES = """
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', w.name, 'status', w.status,
                'pending', coalesce(c.pending, 0), 'running', coalesce(c.running, 0),
                'succeeded', coalesce(c.succeeded, 0), 'failed', coalesce(c.failed, 0),
                'skipped', coalesce(c.skipped, 0)) ORDER BY w.position), '[]'::jsonb)
     FROM rollout_waves w
     LEFT JOIN rollout_wave_counts c ON c.rollout_id = w.rollout_id AND c.wave = w.position
     WHERE w.rollout_id = r.id) AS waves
"""
_ONE_ROLLOUT = f"""
    SELECT r.id, r.status, r.status_reason, r.services, r.request, r.created_by, r.created_at,
           r.updated_at, r.pass AS pass_number, {_WAVES}
    FROM rollouts r WHERE r.id = %s
"""
# A list shows each request summarised (`rollout_request_summary`, a stored column).
_NEWEST_ROLLOUTS = f"""
    SELECT r.id, r.status, r.status_reason, r.services, r.request_summary AS request,
           r.created_by, r.created_at, r.updated_at, r.pass AS pass_number, {_WAVES}
    FROM rollouts r
    WHERE %(status)s::text IS NULL OR r.status = %(status)s
    ORDER BY r.created_at DESC, r.id LIMIT %(limit)s
"""


async def _event(
    conn: AsyncConnection[Any],
    rollout_id: str,
    actor: str,
    action: RolloutAction,
    reason: str | None = None,
) -> None:
    """The rollout's audit event and its lifecycle event (the outbox row), in one statement."""
    pending = rollout_event(rollout_id, action, actor, reason)
    await conn.execute(
        """
        WITH audit AS (
            INSERT INTO rollout_events (rollout_id, actor, action, reason)
            VALUES (%(rollout)s, %(actor)s, %(action)s, %(reason)s)
            RETURNING occurred_at
        )
        INSERT INTO event_outbox (id, family, subject_key, name, event)
        SELECT %(id)s, %(family)s, %(rollout)s, %(name)s,
               %(event)s::jsonb || jsonb_build_object(
                   'time', to_char(audit.occurred_at AT TIME ZONE 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   'data', (%(event)s::jsonb -> 'data') || jsonb_build_object(
                       'services', to_jsonb(r.services), 'status', r.status))
        FROM audit LEFT JOIN rollouts r ON r.id = %(rollout)s
        """,
        {
            "rollout": rollout_id,
            "actor": actor,
            "action": action.value,
            "reason": reason,
            **outbox_params(pending),
        },
    )


class RolloutRepository:
    """Reads and guarded writes of rollouts."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def create(
        self,
        rollout_id: str,
        request: RolloutRequest,
        services: Sequence[str],
        waves: Sequence[WaveSpec],
        created_by: str,
    ) -> int:
        """Record the rollout and materialise its waves in one transaction: each wave takes the
        selected tenants that match its filter and no earlier wave took, oldest first, the first
        `size` of them when it has one. Returns how many tenants the rollout takes."""
        selector = request.selector
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO rollouts (id, status, services, request, created_by)
                VALUES (%s, %s, %s, %s, %s)
                """,
                (
                    rollout_id,
                    RolloutStatus.RUNNING.value,
                    list(services),
                    Jsonb(request.model_dump(mode="json", by_alias=True)),
                    created_by,
                ),
            )
            total = 0
            for position, wave in enumerate(waves):
                await conn.execute(
                    """
                    INSERT INTO rollout_waves (rollout_id, position, name, status)
                    VALUES (%s, %s, %s, %s)
                    """,
                    (rollout_id, position, wave.name, WaveStatus.PENDING.value),
                )
                cur = await conn.execute(
                    """
                    INSERT INTO rollout_tenants (rollout_id, tenant_id, wave, position, status)
                    SELECT %(rollout)s, t.id, %(wave)s,
                           %(offset)s + row_number() OVER (ORDER BY t.created_at, t.id),
                           'PENDING'
                    FROM (
                        SELECT t.id, t.created_at FROM tenants t
                        -- A MOVING tenant is an ACTIVE one whose storage moves: taken as
                        -- ACTIVE, its calls wait until the move is over.
                        WHERE (t.status = ANY(%(statuses)s)
                               OR t.status = 'MOVING' AND 'ACTIVE' = ANY(%(statuses)s))
                          AND t.status <> ALL(%(never)s)
                          AND (%(tiers)s::text[] IS NULL OR t.sla_tier = ANY(%(tiers)s))
                          AND (%(ids)s::text[] IS NULL OR t.id = ANY(%(ids)s))
                          AND (%(wave_tiers)s::text[] IS NULL OR t.sla_tier = ANY(%(wave_tiers)s))
                          AND (%(wave_ids)s::text[] IS NULL OR t.id = ANY(%(wave_ids)s))
                          AND NOT EXISTS (
                              SELECT 1 FROM rollout_tenants r
                              WHERE r.rollout_id = %(rollout)s AND r.tenant_id = t.id)
                        ORDER BY t.created_at, t.id
                        LIMIT %(size)s
                    ) t
                    """,
                    {
                        "rollout": rollout_id,
                        "wave": position,
                        "offset": total,
                        "statuses": [s.value for s in selector.status],
                        "never": [
                            TenantStatus.DELETION_SCHEDULED.value,
                            TenantStatus.DELETING.value,
                            TenantStatus.DELETION_ERROR.value,
                            TenantStatus.DELETED.value,
                        ],
                        "tiers": [t.value for t in selector.sla_tier]
                        if selector.sla_tier
                        else None,
                        "ids": selector.tenant_ids,
                        "wave_tiers": [t.value for t in wave.sla_tier] if wave.sla_tier else None,
                        "wave_ids": wave.tenant_ids,
                        "size": wave.size,
                    },
                )
                total += cur.rowcount
            await _event(conn, rollout_id, created_by, RolloutAction.STARTED, f"{total} tenants")
        return total

    async def get(self, rollout_id: str) -> Rollout:
        """The rollout with its counts per wave and its first failures."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_ONE_ROLLOUT, (rollout_id,))
            row = await cur.fetchone()
            if row is None:
                raise RolloutMissing(rollout_id)
            await cur.execute(
                """
                SELECT tenant_id, service, error FROM rollout_tenants
                WHERE rollout_id = %s AND status = 'FAILED'
                ORDER BY position LIMIT %s
                """,
                (rollout_id, MAX_FAILURES_SHOWN),
            )
            failures = [RolloutFailure(**f) for f in await cur.fetchall()]
        waves = _waves(row.pop("waves"))
        return Rollout(**row, counts=_total(waves), waves=waves, failures=failures)

    async def newest(
        self, status: RolloutStatus | None = None, limit: int = 100
    ) -> list[RolloutSummary]:
        """The newest rollouts first, optionally in one status, summarised: one statement, the
        counts read from `rollout_wave_counts` (kept by triggers on `rollout_tenants`)."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _NEWEST_ROLLOUTS,
                {"status": status.value if status else None, "limit": limit},
            )
            rows = await cur.fetchall()
        listed = []
        for row in rows:
            waves = _waves(row.pop("waves"))
            listed.append(RolloutSummary(**row, counts=_total(waves), waves=waves))
        return listed

    async def needing_run(self, settled_for: timedelta) -> list[str]:
        """Rollouts RUNNING, PAUSED or HALTED (a run of them must be open), oldest first, whose
        row has not changed for `settled_for` (a rollout is recorded before its run starts)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT id FROM rollouts
                WHERE status = ANY(%s) AND updated_at < clock_timestamp() - %s
                ORDER BY created_at, id
                """,
                (
                    [
                        s.value
                        for s in (RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED)
                    ],
                    settled_for,
                ),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def ended(
        self, rollout_ids: Sequence[str], settled_for: timedelta
    ) -> dict[str, RolloutStatus]:
        """Of `rollout_ids`, those that ended (SUCCEEDED, FAILED, CANCELLED) at least
        `settled_for` ago, with their status."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT id, status FROM rollouts
                WHERE id = ANY(%s) AND status = ANY(%s)
                  AND updated_at < clock_timestamp() - %s
                """,
                (list(rollout_ids), [s.value for s in FINAL_ROLLOUT_STATUSES], settled_for),
            )
            return {str(row[0]): RolloutStatus(row[1]) for row in await cur.fetchall()}

    async def resume_point(self, rollout_id: str) -> ResumePoint:
        """Where a new run of the rollout goes on, read from its rows."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT w.position, coalesce(c.pending, 0), coalesce(c.running, 0),
                       coalesce(c.succeeded, 0), coalesce(c.failed, 0), coalesce(c.skipped, 0)
                FROM rollout_waves w
                LEFT JOIN rollout_wave_counts c
                  ON c.rollout_id = w.rollout_id AND c.wave = w.position
                WHERE w.rollout_id = %s ORDER BY w.position
                """,
                (rollout_id,),
            )
            counts = {int(row[0]): _counts(*row[1:]) for row in await cur.fetchall()}
            cur = await conn.execute(
                """
                SELECT coalesce(max(batch) FILTER (WHERE status = 'RUNNING'), max(batch) + 1, 1)
                FROM rollout_tenants WHERE rollout_id = %s
                """,
                (rollout_id,),
            )
            row = await cur.fetchone()
        if not counts:
            raise RolloutMissing(rollout_id)
        unfinished = [w for w, c in counts.items() if c.pending or c.running]
        return ResumePoint(
            wave=min(unfinished, default=len(counts)),
            batch=int(row[0]) if row else 1,
            counts=counts,
        )

    async def tenants(
        self,
        rollout_id: str,
        status: RolloutTenantStatus | None,
        after: int | None,
        limit: int,
    ) -> tuple[list[RolloutTenant], int | None]:
        """A page of the rollout's tenants in rollout order, and the position to continue after."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT t.position, t.tenant_id, w.name AS wave, t.status, t.service, t.error,
                       t.updated_at
                FROM rollout_tenants t
                JOIN rollout_waves w ON w.rollout_id = t.rollout_id AND w.position = t.wave
                WHERE t.rollout_id = %(rollout)s
                  AND (%(status)s::text IS NULL OR t.status = %(status)s)
                  AND (%(after)s::bigint IS NULL OR t.position > %(after)s)
                ORDER BY t.position LIMIT %(limit)s
                """,
                {
                    "rollout": rollout_id,
                    "status": status.value if status else None,
                    "after": after,
                    "limit": limit + 1,
                },
            )
            rows = await cur.fetchall()
        shown = rows[:limit]
        next_after = shown[-1]["position"] if len(rows) > limit else None
        return [
            RolloutTenant(**{k: v for k, v in r.items() if k != "position"}) for r in shown
        ], next_after

    async def events(self, rollout_id: str) -> list[RolloutEvent]:
        """The rollout's audit trail, oldest first."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT id, occurred_at, actor, action, reason FROM rollout_events
                WHERE rollout_id = %s ORDER BY id
                """,
                (rollout_id,),
            )
            return [RolloutEvent(**row) for row in await cur.fetchall()]

    async def change_status(
        self,
        rollout_id: str,
        target: RolloutStatus,
        actor: str,
        action: RolloutAction | None,
        reason: str | None = None,
        *,
        repeat_ok: bool = True,
    ) -> RolloutStatus:
        """Move the rollout to `target` from an allowed status, with its audit event; a repeat
        is a no-op unless `repeat_ok` is false (an operator's pause of a paused rollout is
        refused). `RolloutStateRefused` otherwise."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status FROM rollouts WHERE id = %s FOR UPDATE", (rollout_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise RolloutMissing(rollout_id)
            current = RolloutStatus(row[0])
            if current is target and repeat_ok:
                return current
            if current not in _ROLLOUT_SOURCES[target]:
                raise RolloutStateRefused(rollout_id, current, target)
            await conn.execute(
                """
                UPDATE rollouts SET status = %s, status_reason = %s,
                                    updated_at = clock_timestamp()
                WHERE id = %s
                """,
                (target.value, reason, rollout_id),
            )
            if action is not None:
                await _event(conn, rollout_id, actor, action, reason)
        return target

    async def count_by_status(self) -> dict[RolloutStatus, int]:
        """How many rollouts are in each status; every status is present, zero included."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT status, count(*) FROM rollouts GROUP BY status")
            counts = {RolloutStatus(status): int(count) for status, count in await cur.fetchall()}
        return {status: counts.get(status, 0) for status in RolloutStatus}

    async def status(self, rollout_id: str) -> RolloutStatus:
        """The rollout's status."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM rollouts WHERE id = %s", (rollout_id,))
            row = await cur.fetchone()
        if row is None:
            raise RolloutMissing(rollout_id)
        return RolloutStatus(row[0])

    async def set_wave(self, rollout_id: str, wave: int, status: WaveStatus) -> None:
        """Record where a wave stands."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE rollout_waves SET status = %s WHERE rollout_id = %s AND position = %s",
                (status.value, rollout_id, wave),
            )

    async def wave_counts(self, rollout_id: str, wave: int) -> RolloutCounts:
        """The wave's tenants by result."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT pending, running, succeeded, failed, skipped FROM rollout_wave_counts
                WHERE rollout_id = %s AND wave = %s
                """,
                (rollout_id, wave),
            )
            row = await cur.fetchone()
        return _counts(*row) if row else RolloutCounts()

    async def claim(self, rollout_id: str, wave: int, batch: int, limit: int) -> list[Claimed]:
        """Claim up to `limit` pending tenants of the wave for `batch`, oldest position first."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                UPDATE rollout_tenants r SET status = 'RUNNING', batch = %(batch)s,
                                             updated_at = clock_timestamp()
                FROM (
                    SELECT tenant_id FROM rollout_tenants
                    WHERE rollout_id = %(rollout)s AND wave = %(wave)s
                      AND status = 'PENDING'
                    ORDER BY position LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ) picked, tenants t
                WHERE r.rollout_id = %(rollout)s AND r.tenant_id = picked.tenant_id
                  AND t.id = r.tenant_id
                RETURNING r.tenant_id, t.status, t.storage_mode, r.position, t.storage_server
                """,
                {"rollout": rollout_id, "wave": wave, "batch": batch, "limit": limit},
            )
            rows = sorted(await cur.fetchall(), key=lambda r: r[3])
        return [Claimed(r[0], TenantStatus(r[1]), r[2], r[4]) for r in rows]

    async def standing(
        self, rollout_id: str, tenant_id: str
    ) -> tuple[RolloutStatus, TenantStatus, str | None]:
        """The rollout's status, the tenant's and its storage server, now (read before each
        tenant's calls: a move may have changed the server since the claim)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT r.status, t.status, t.storage_server FROM rollouts r, tenants t
                WHERE r.id = %s AND t.id = %s
                """,
                (rollout_id, tenant_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise RolloutMissing(rollout_id)
        return RolloutStatus(row[0]), TenantStatus(row[1]), row[2]

    async def defer(self, rollout_id: str, tenant_id: str, reason: str) -> None:
        """Hand one claimed tenant back, pending, with why it waits (shown as its `error`
        until its calls end, in the rollout's tenant list)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE rollout_tenants SET status = 'PENDING', batch = NULL, error = %s,
                                           updated_at = clock_timestamp()
                WHERE rollout_id = %s AND tenant_id = %s AND status = 'RUNNING'
                """,
                (reason, rollout_id, tenant_id),
            )

    async def reclaim(self, rollout_id: str, tenant_id: str, batch: int) -> bool:
        """Claim one tenant handed back by this batch (it was MOVING) once more; False when it
        is no longer pending (another batch took it, or the rollout ended)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE rollout_tenants SET status = 'RUNNING', batch = %s,
                                           updated_at = clock_timestamp()
                WHERE rollout_id = %s AND tenant_id = %s AND status = 'PENDING'
                """,
                (batch, rollout_id, tenant_id),
            )
            return bool(cur.rowcount == 1)

    async def calls_in_flight(self, tenant_id: str) -> bool:
        """Whether a rollout holds the tenant claimed (its calls may be running): a move does
        not freeze the tenant's storage under them."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM rollout_tenants WHERE tenant_id = %s AND status = 'RUNNING' LIMIT 1",
                (tenant_id,),
            )
            return await cur.fetchone() is not None

    async def release(
        self, rollout_id: str, wave: int, tenant_ids: Sequence[str] | None = None
    ) -> int:
        """Hand back claimed tenants without a result (`tenant_ids`, or every RUNNING tenant of
        the wave): pending again, for the next batch. Returns how many."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE rollout_tenants SET status = 'PENDING', batch = NULL,
                                           updated_at = clock_timestamp()
                WHERE rollout_id = %(rollout)s AND wave = %(wave)s AND status = 'RUNNING'
                  AND (%(ids)s::text[] IS NULL OR tenant_id = ANY(%(ids)s))
                """,
                {
                    "rollout": rollout_id,
                    "wave": wave,
                    "ids": list(tenant_ids) if tenant_ids is not None else None,
                },
            )
            return int(cur.rowcount)

    async def finish_tenant(
        self,
        rollout_id: str,
        tenant_id: str,
        status: RolloutTenantStatus,
        service: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record a tenant's result in the rollout."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE rollout_tenants SET status = %s, service = %s, error = %s,
                                           updated_at = clock_timestamp()
                WHERE rollout_id = %s AND tenant_id = %s
                """,
                (status.value, service, error, rollout_id, tenant_id),
            )

    async def new_pass(self, rollout_id: str, actor: str) -> int:
        """retry-failed: a new pass of a finished rollout over its FAILED tenants only; returns
        how many. `RolloutStateRefused` unless the rollout ended FAILED."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status FROM rollouts WHERE id = %s FOR UPDATE", (rollout_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise RolloutMissing(rollout_id)
            current = RolloutStatus(row[0])
            if current is not RolloutStatus.FAILED:
                raise RolloutStateRefused(rollout_id, current, RolloutStatus.RUNNING)
            cur = await conn.execute(
                """
                UPDATE rollout_tenants SET status = 'PENDING', pass = pass + 1, batch = NULL,
                                           service = NULL, error = NULL
                WHERE rollout_id = %s AND status = 'FAILED'
                """,
                (rollout_id,),
            )
            again = cur.rowcount
            await conn.execute(
                """
                UPDATE rollout_waves SET status = 'PENDING' WHERE rollout_id = %s AND position IN
                    (SELECT DISTINCT wave FROM rollout_tenants
                     WHERE rollout_id = %s AND status = 'PENDING')
                """,
                (rollout_id, rollout_id),
            )
            await conn.execute(
                """
                UPDATE rollouts SET status = 'RUNNING', status_reason = NULL, pass = pass + 1,
                                    updated_at = clock_timestamp()
                WHERE id = %s
                """,
                (rollout_id,),
            )
            await _event(conn, rollout_id, actor, RolloutAction.RETRIED, f"{again} tenants")
        return int(again)

    async def pass_number(self, rollout_id: str) -> int:
        """The rollout's current pass."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT pass FROM rollouts WHERE id = %s", (rollout_id,))
            row = await cur.fetchone()
        if row is None:
            raise RolloutMissing(rollout_id)
        return int(row[0] or 1)


def is_final(status: RolloutStatus) -> bool:
    """True once a rollout ended (a FAILED one may still get a retry-failed pass)."""
    return status in FINAL_ROLLOUT_STATUSES
