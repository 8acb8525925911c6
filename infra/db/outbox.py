"""All SQL of the lifecycle-event outbox, besides the writes that go with each audit event
(`repository.append_event`, `rollouts._event`): the relay's lease, its reads in publish order
and its marks, the backlog figures for metrics and `/readyz`, and the pruning of published
events past their retention.

One relay publishes at a time per database: it holds a session advisory lock on a connection of
its own (`OutboxLease`). PostgreSQL frees the lock when that session ends, so when the holder's
process dies another relay's next `try_acquire` takes over; while the lease's connection is
broken its holder cannot mark anything either, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from infra.events.cloudevents import PendingEvent

# One advisory lock id for the outbox relay ("outbox" in ASCII).
RELAY_LOCK_KEY = 0x6F7574626F78
# Where the commits of new events are announced (migration 0016).
NOTIFY_CHANNEL = "platform_outbox"
# A relay's mark of an error is cut to this many characters.
_ERROR_CHARS = 500


def outbox_params(pending: PendingEvent) -> dict[str, Any]:
    """The bound values of an outbox row written beside its audit event."""
    return {
        "id": pending.event_id,
        "family": pending.family.value,
        "name": pending.name,
        "event": Jsonb(pending.envelope),
    }


@dataclass(frozen=True)
class OutboxRow:
    """An unpublished lifecycle event, as the relay reads it."""

    id: str
    seq: int
    family: str
    subject_key: str
    name: str
    event: dict[str, Any]


# Unpublished events counted one by one up to this many; beyond, the count is estimated.
BACKLOG_COUNT_BOUND = 1_000


@dataclass(frozen=True)
class Backlog:
    """The unpublished events: how many, and how long the oldest has waited.

    `count` is exact up to `BACKLOG_COUNT_BOUND` (`exact`); beyond it, it is the span of the
    unpublished events' `seq` numbers: the relay publishes in `seq` order, so the backlog is one
    run of numbers save the holes of rolled-back writes, which the estimate counts too (it may
    be high by those, never low)."""

    count: int
    oldest: timedelta
    exact: bool = True


# Each figure is read through a partial index of the unpublished events, so its cost does not
# grow with the backlog: a count that stops at the bound, the first and last `seq` (the
# estimate beyond it) and the oldest `created_at` (event_outbox_unpublished_age_idx).
_BACKLOG_SQL = """
    SELECT (SELECT count(*) FROM (SELECT FROM event_outbox WHERE published_at IS NULL
                                  LIMIT %(bound)s) AS counted),
           (SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM event_outbox
            WHERE published_at IS NULL),
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT min(created_at) FROM event_outbox WHERE published_at IS NULL)), 0)::float8
"""


async def read_backlog(conn: AsyncConnection[Any]) -> Backlog:
    """The backlog as read on `conn`."""
    cur = await conn.execute(_BACKLOG_SQL, {"bound": BACKLOG_COUNT_BOUND})
    row = await cur.fetchone()
    assert row is not None
    counted, span, oldest = int(row[0]), int(row[1]), float(row[2])
    exact = counted < BACKLOG_COUNT_BOUND
    return Backlog(
        count=counted if exact else max(span, counted),
        oldest=timedelta(seconds=oldest),
        exact=exact,
    )


async def outbox_backlog(pool: AsyncConnectionPool[Any]) -> Backlog:
    """The backlog as the metadata database has it now."""
    async with pool.connection(timeout=2) as conn:
        return await read_backlog(conn)


async def prune_published(pool: AsyncConnectionPool[Any], older_than: timedelta, limit: int) -> int:
    """Delete at most `limit` events published more than `older_than` ago, in one short
    transaction; returns how many went. Rows another transaction holds are skipped, not
    waited for, and an unpublished event is never among them."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            DELETE FROM event_outbox WHERE id = ANY(ARRAY(
                SELECT id FROM event_outbox WHERE published_at < now() - %(age)s
                LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
            """,
            {"age": older_than, "limit": limit},
        )
        return int(cur.rowcount)


class OutboxLease:
    """A relay's own connection: the advisory lock, and every read and mark made under it."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: AsyncConnection[Any] | None = None
        self.held = False

    async def __aenter__(self) -> OutboxLease:
        self._conn = await AsyncConnection.connect(self._url, autocommit=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing the session frees the lock; nothing to unlock explicitly.
        if self._conn is not None:
            await self._conn.close()
        self.held = False

    @property
    def _c(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the lease is not open")
        return self._conn

    async def listen(self) -> None:
        """Be told of committed events (see migration 0016) on this session."""
        await self._c.execute(f"LISTEN {NOTIFY_CHANNEL}")

    async def wait_for_events(self, timeout: timedelta) -> bool:
        """Wait until events are committed (or were, since the last wait), at most `timeout`;
        True when told."""
        told = False
        async for _ in self._c.notifies(timeout=timeout.total_seconds(), stop_after=1):
            told = True
        return told

    async def try_acquire(self) -> bool:
        """Take the relay lock if no other session holds it; True once this one holds it."""
        if not self.held:
            cur = await self._c.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))
            row = await cur.fetchone()
            self.held = bool(row and row[0])
        return self.held

    async def unpublished(self, limit: int) -> list[OutboxRow]:
        """The next `limit` unpublished events in publish (`seq`) order."""
        async with self._c.cursor(row_factory=class_row(OutboxRow)) as cur:
            await cur.execute(
                """
                SELECT id::text AS id, seq, family, subject_key, name, event FROM event_outbox
                WHERE published_at IS NULL ORDER BY seq LIMIT %s
                """,
                (limit,),
            )
            return await cur.fetchall()

    async def mark_published(self, event_ids: list[str]) -> None:
        """Stamp the events the bus acknowledged."""
        if event_ids:
            await self._c.execute(
                """
                UPDATE event_outbox
                SET published_at = clock_timestamp(), attempts = attempts + 1
                WHERE id = ANY(%s::uuid[]) AND published_at IS NULL
                """,
                (event_ids,),
            )

    async def mark_failed(self, event_id: str, error: str) -> None:
        """Count a publish the bus did not acknowledge; the event stays in the backlog."""
        await self._c.execute(
            "UPDATE event_outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s",
            (error[:_ERROR_CHARS], event_id),
        )

    async def backlog(self) -> Backlog:
        """The backlog, read on the lease's connection."""
        return await read_backlog(self._c)
