"""All SQL of a storage server's drain: its state on the server's row (DRAINING, then DRAINED
or CORDONED), the drain's progress there and its audit events.

    start     ACTIVE or CORDONED (or DRAINING whose run has ended) -> DRAINING, the progress
              zeroed, DRAIN_STARTED; refused (`DrainConflict`) when DRAINING with its run
              under way, or DRAINED
    progress  the counters and failures as the run has them (only while DRAINING)
    finish    the run's end: CORDONED when cancelled (DRAIN_CANCELLED); DRAINED when no tenant
              but DELETED ones is on the server (DRAINED); else it stays DRAINING with its run
              ended (DRAIN_STOPPED), so a new request starts it again

Each write locks the server's row (the lock placement takes, so a placement in flight is seen
by the drain and the drain's state by the next placement) and repeats harmlessly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tenancy.drains import DrainFailure, DrainTenant
from tenancy.fleet import ServerEventType, ServerState
from tenancy.status import TenantStatus


class DrainConflict(Exception):
    """The server's state does not allow the write (a drain under way, drained already, or a
    cancel of a server that is not DRAINING)."""

    def __init__(self, message: str, state: ServerState) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class _Row:
    state: ServerState
    ended: bool


async def _lock(conn: AsyncConnection[Any], name: str) -> _Row:
    await conn.execute(
        "INSERT INTO storage_servers (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,)
    )
    cur = await conn.execute(
        "SELECT state, drain_ended_at IS NOT NULL FROM storage_servers WHERE name = %s FOR UPDATE",
        (name,),
    )
    row = await cur.fetchone()
    assert row is not None  # inserted above
    return _Row(ServerState(row[0]), bool(row[1]))


async def _event(
    conn: AsyncConnection[Any], name: str, event: ServerEventType, actor: str, reason: str | None
) -> None:
    await conn.execute(
        "INSERT INTO storage_server_events (server, type, actor, reason) VALUES (%s, %s, %s, %s)",
        (name, event.value, actor, reason),
    )


class DrainRepository:
    """Guarded writes of servers' drains, and the reads their runs need."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def start(self, name: str, actor: str, reason: str | None, concurrency: int) -> bool:
        """Put the server DRAINING with its progress zeroed and DRAIN_STARTED; True when it
        was DRAINING already with its run ended (the drain starts again). `DrainConflict`
        when a drain's run is under way or the server is DRAINED."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, name)
            if row.state is ServerState.DRAINED or (
                row.state is ServerState.DRAINING and not row.ended
            ):
                raise DrainConflict(
                    f"storage server {name} is already {row.state.value}", row.state
                )
            await conn.execute(
                """
                UPDATE storage_servers
                SET state = %(draining)s, state_reason = %(reason)s,
                    state_changed_at = clock_timestamp(), state_changed_by = %(actor)s,
                    drain_started_at = clock_timestamp(), drain_ended_at = NULL,
                    drain_reason = %(reason)s, drain_concurrency = %(concurrency)s,
                    drain_total = 0, drain_moved = 0, drain_failed = 0, drain_running = 0,
                    drain_failures = '[]'
                WHERE name = %(name)s
                """,
                {
                    "draining": ServerState.DRAINING.value,
                    "reason": reason,
                    "actor": actor,
                    "concurrency": concurrency,
                    "name": name,
                },
            )
            await _event(conn, name, ServerEventType.DRAIN_STARTED, actor, reason)
        return row.state is ServerState.DRAINING

    async def tenants(self, name: str) -> list[DrainTenant]:
        """The tenants on the server (every status but DELETED), by id."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, status FROM tenants WHERE storage_server = %s AND status <> %s "
                "ORDER BY id",
                (name, TenantStatus.DELETED.value),
            )
            return [
                DrainTenant(tenant_id=tenant_id, status=TenantStatus(status))
                for tenant_id, status in await cur.fetchall()
            ]

    async def progress(
        self,
        name: str,
        *,
        total: int,
        moved: int,
        failed: int,
        running: int,
        failures: Sequence[DrainFailure],
    ) -> bool:
        """Record the drain's progress; False when the server is not DRAINING (nothing
        written)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE storage_servers
                SET drain_total = %s, drain_moved = %s, drain_failed = %s, drain_running = %s,
                    drain_failures = %s
                WHERE name = %s AND state = %s
                RETURNING name
                """,
                (
                    total,
                    moved,
                    failed,
                    running,
                    Jsonb([f.model_dump(mode="json", by_alias=True) for f in failures]),
                    name,
                    ServerState.DRAINING.value,
                ),
            )
            return await cur.fetchone() is not None

    async def finish(
        self, name: str, actor: str, *, cancelled: bool, reason: str | None = None
    ) -> ServerState:
        """End the drain's run: CORDONED when `cancelled` (also once its run has ended),
        DRAINED when the server holds no tenant (every status but DELETED) and none moves onto
        it, else DRAINING with the run ended; the state it is in afterwards. A server no
        longer DRAINING is left as it is (a repeat)."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, name)
            # A cancel of a drain whose run has ended cordons it still; any other repeat is
            # left as it is.
            if row.state is not ServerState.DRAINING or (row.ended and not cancelled):
                return row.state
            # A move on its way onto the server (begun before the drain) counts as on it.
            cur = await conn.execute(
                "SELECT count(*) FROM tenants WHERE status <> %s "
                "AND (storage_server = %s OR status = %s AND move_to_server = %s)",
                (TenantStatus.DELETED.value, name, TenantStatus.MOVING.value, name),
            )
            counted = await cur.fetchone()
            left = int(counted[0]) if counted else 0
            if cancelled:
                state, event = ServerState.CORDONED, ServerEventType.DRAIN_CANCELLED
            elif left == 0:
                state, event = ServerState.DRAINED, ServerEventType.DRAINED
            else:
                state, event = ServerState.DRAINING, ServerEventType.DRAIN_STOPPED
                reason = reason or f"{left} tenants are left on the server"
            await conn.execute(
                """
                UPDATE storage_servers
                SET state = %s, drain_ended_at = clock_timestamp(), drain_running = 0,
                    state_changed_at = CASE WHEN state = %s THEN state_changed_at
                                            ELSE clock_timestamp() END,
                    state_changed_by = CASE WHEN state = %s THEN state_changed_by ELSE %s END,
                    state_reason = CASE WHEN state = %s THEN state_reason ELSE %s END
                WHERE name = %s
                """,
                (
                    state.value,
                    state.value,
                    state.value,
                    actor,
                    state.value,
                    reason,
                    name,
                ),
            )
            await _event(conn, name, event, actor, reason)
            return state
