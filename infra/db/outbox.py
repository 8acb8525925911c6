"""All SQL of the lifecycle-event outbox, besides the writes that go with each audit event
(`repository.append_event`, `rollouts._event`): the relay's lease, its reads in publish order
and its marks, and the backlog figures for metrics and `/readyz`.

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


@dataclass(frozen=True)
class Backlog:
    """The unpublished events: how many, and how long the oldest has waited."""

    count: int
    oldest: timedelta


_BACKLOG_SQL = """
    SELECT count(*),
           coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
    FROM event_outbox WHERE published_at IS NULL
"""


async def _backlog(conn: AsyncConnection[Any]) -> Backlog:
    cur = await conn.execute(_BACKLOG_SQL)
    row = await cur.fetchone()
    assert row is not None
    return Backlog(count=int(row[0]), oldest=timedelta(seconds=float(row[1])))


async def outbox_backlog(pool: AsyncConnectionPool[Any]) -> Backlog:
    """The backlog as the metadata database has it now."""
    async with pool.connection(timeout=2) as conn:
        return await _backlog(conn)


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
        return await _backlog(self._c)
