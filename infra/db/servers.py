"""SQL on the storage servers' metadata: their states, audit events and checks, and the
placement of tenants on them.

Placement is one transaction: the tenant's row, then the rows of its pool's servers (FOR UPDATE,
in name order, so placements into one pool take turns and never deadlock), a count of each
server's tenants, the choice (`tenancy.fleet.choose_server`) and the write of the chosen name on
the tenant's row. Two placements can therefore never both see the last free place, and a cordon
(which updates a server's row) waits for a placement in flight and is seen by the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantLeaving
from tenancy.fleet import (
    ServerEventType,
    ServerLoad,
    ServerState,
    StorageServer,
    candidates,
    choose_server,
    no_room_reason,
)
from tenancy.models import SlaTier, StorageMode
from tenancy.status import DELETION_STATUSES, TenantStatus


class NoRoom(Exception):
    """No server of the tenant's pool may take it; the message is its statusReason."""


class UnknownServer(Exception):
    """A tenant's row names a server the configuration does not have."""


class AlreadyInState(Exception):
    """A cordon of a cordoned server, or an uncordon of an active one; either of a DRAINING
    one (its drain is cancelled with cancel-drain)."""

    def __init__(self, name: str, state: ServerState) -> None:
        super().__init__(
            f"storage server {name} is DRAINING: cancel its drain first"
            if state is ServerState.DRAINING
            else f"storage server {name} is already {state.value}"
        )
        self.state = state


@dataclass(frozen=True)
class DrainProgress:
    """A server's last drain, as its row has it."""

    started_at: datetime
    ended_at: datetime | None
    reason: str | None
    concurrency: int | None
    total: int
    moved: int
    failed: int
    running: int
    failures: list[dict[str, Any]]


@dataclass(frozen=True)
class ServerRecord:
    """What the metadata database knows of one server."""

    name: str
    state: ServerState
    state_reason: str | None
    state_changed_at: datetime | None
    state_changed_by: str | None
    reachable: bool | None
    checked_at: datetime | None
    server_version: str | None
    check_error: str | None
    tenants: int
    # None until the server is first drained.
    drain: DrainProgress | None = None


@dataclass(frozen=True)
class ServerEvent:
    """One line of a server's audit trail."""

    id: int
    server: str
    type: ServerEventType
    actor: str
    reason: str | None
    occurred_at: datetime


_COUNTS = """
    SELECT storage_server, count(*) FROM tenants
    WHERE storage_server = ANY(%s) AND status <> 'DELETED'
    GROUP BY storage_server
"""


class ServerRepository:
    """Reads and guarded writes of the storage servers' rows."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def stranded(self, names: Sequence[str]) -> dict[str, int]:
        """Servers that hold tenants (every status but DELETED) and are not among `names`,
        with how many each holds."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT storage_server, count(*) FROM tenants
                WHERE status <> 'DELETED' AND storage_server IS NOT NULL
                  AND storage_server <> ALL(%s)
                GROUP BY storage_server ORDER BY storage_server
                """,
                (list(names),),
            )
            return dict(await cur.fetchall())

    async def place(
        self,
        tenant_id: str,
        servers: Sequence[StorageServer],
        pool_of: dict[SlaTier, str],
    ) -> str:
        """The server the tenant's storage is on, placing it first if it has none.

        Raises `NoRoom` (with the statusReason) when no server of its pool may take it, and
        `TenantLeaving` when its deletion was asked (nothing is placed then)."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT storage_server, sla_tier, storage_mode, status FROM tenants "
                "WHERE id = %s FOR UPDATE",
                (tenant_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise LookupError(f"tenant {tenant_id} has no row to place")
            placed, tier, mode, status = row
            if placed is not None:
                return str(placed)
            if TenantStatus(status) in DELETION_STATUSES:
                raise TenantLeaving(tenant_id)
            tier, mode = SlaTier(tier), StorageMode(mode)
            pool = pool_of[tier]
            choices = candidates(servers, pool, mode)
            chosen = choose_server(choices, await lock_loads(conn, [s.name for s in choices]))
            if chosen is None:
                raise NoRoom(no_room_reason(pool, tier, mode))
            await conn.execute(
                "UPDATE tenants SET storage_server = %s, updated_at = clock_timestamp() "
                "WHERE id = %s",
                (chosen.name, tenant_id),
            )
            return chosen.name

    async def server_of(self, tenant_id: str) -> str | None:
        """The server a tenant's row names (None: not placed, or no such tenant)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT storage_server FROM tenants WHERE id = %s", (tenant_id,)
            )
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def records(self, names: Sequence[str]) -> dict[str, ServerRecord]:
        """Each named server's row and tenant count (a server without a row reads ACTIVE)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_COUNTS, (list(names),))
            counts = dict(await cur.fetchall())
            dict_cur = conn.cursor(row_factory=dict_row)
            await dict_cur.execute(
                "SELECT * FROM storage_servers WHERE name = ANY(%s)", (list(names),)
            )
            rows = {row["name"]: row for row in await dict_cur.fetchall()}
        records = {}
        for name in names:
            row = rows.get(name, {})
            records[name] = ServerRecord(
                name=name,
                state=ServerState(row.get("state", ServerState.ACTIVE.value)),
                state_reason=row.get("state_reason"),
                state_changed_at=row.get("state_changed_at"),
                state_changed_by=row.get("state_changed_by"),
                reachable=row.get("reachable"),
                checked_at=row.get("checked_at"),
                server_version=row.get("server_version"),
                check_error=row.get("check_error"),
                tenants=counts.get(name, 0),
                drain=_drain_of(row),
            )
        return records

    async def set_state(
        self, name: str, target: ServerState, actor: str, reason: str | None
    ) -> None:
        """Cordon (`CORDONED`) or uncordon (`ACTIVE`) a server and record the event, in one
        transaction; `AlreadyInState` when it is in `target` already."""
        event = (
            ServerEventType.CORDONED
            if target is ServerState.CORDONED
            else ServerEventType.UNCORDONED
        )
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO storage_servers (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            cur = await conn.execute(
                """
                UPDATE storage_servers
                SET state = %s, state_reason = %s, state_changed_at = clock_timestamp(),
                    state_changed_by = %s
                WHERE name = %s AND state <> %s AND state <> %s
                RETURNING name
                """,
                (target.value, reason, actor, name, target.value, ServerState.DRAINING.value),
            )
            if await cur.fetchone() is None:
                state = await conn.execute(
                    "SELECT state FROM storage_servers WHERE name = %s", (name,)
                )
                found = await state.fetchone()
                draining = found is not None and found[0] == ServerState.DRAINING.value
                raise AlreadyInState(name, ServerState.DRAINING if draining else target)
            await conn.execute(
                "INSERT INTO storage_server_events (server, type, actor, reason) "
                "VALUES (%s, %s, %s, %s)",
                (name, event.value, actor, reason),
            )

    async def events(self, name: str) -> list[ServerEvent]:
        """A server's audit trail, oldest first."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT id, server, type, actor, reason, occurred_at "
                "FROM storage_server_events WHERE server = %s ORDER BY id",
                (name,),
            )
            return [
                ServerEvent(**{**row, "type": ServerEventType(row["type"])})
                for row in await cur.fetchall()
            ]

    async def record_check(
        self, name: str, *, reachable: bool, version: str | None, error: str | None
    ) -> None:
        """Store the outcome of a reachability check (the version is kept from the last
        check that reached the server)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO storage_servers AS s
                    (name, reachable, checked_at, server_version, check_error)
                VALUES (%(name)s, %(reachable)s, clock_timestamp(), %(version)s, %(error)s)
                ON CONFLICT (name) DO UPDATE SET
                    reachable = excluded.reachable, checked_at = excluded.checked_at,
                    server_version = coalesce(excluded.server_version, s.server_version),
                    check_error = excluded.check_error
                """,
                {"name": name, "reachable": reachable, "version": version, "error": error},
            )


def _drain_of(row: dict[str, Any]) -> DrainProgress | None:
    if row.get("drain_started_at") is None:
        return None
    return DrainProgress(
        started_at=row["drain_started_at"],
        ended_at=row["drain_ended_at"],
        reason=row["drain_reason"],
        concurrency=row["drain_concurrency"],
        total=row["drain_total"],
        moved=row["drain_moved"],
        failed=row["drain_failed"],
        running=row["drain_running"],
        failures=list(row["drain_failures"] or []),
    )


# What a placement counts on a server: its tenants, and the moves on their way to it (a
# move's target holds its place from the move's begin, so the two never both take the last).
_LOADS = """
    SELECT server, count(*) FROM (
        SELECT storage_server AS server FROM tenants
        WHERE storage_server = ANY(%(names)s) AND status <> 'DELETED'
        UNION ALL
        SELECT move_to_server FROM tenants
        WHERE move_to_server = ANY(%(names)s) AND status = 'MOVING'
    ) AS held GROUP BY server
"""


async def lock_loads(conn: AsyncConnection[Any], names: list[str]) -> dict[str, ServerLoad]:
    """Lock the servers' rows (in name order) and read their states and tenant counts (the
    moves on their way to each included): what placement and a move's target are checked
    against, in the caller's transaction."""
    if not names:
        return {}
    await conn.execute(
        "INSERT INTO storage_servers (name) SELECT unnest(%s::text[]) "
        "ON CONFLICT (name) DO NOTHING",
        (names,),
    )
    cur = await conn.execute(
        "SELECT name, state FROM storage_servers WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
        (names,),
    )
    states = {name: ServerState(state) for name, state in await cur.fetchall()}
    cur = await conn.execute(_LOADS, {"names": names})
    counts = dict(await cur.fetchall())
    return {name: ServerLoad(states[name], counts.get(name, 0)) for name in names}
