"""All SQL of a tenant's move between storage servers, and of a tenant's update (a new name, a
new tier, which moves it when its pool changes).

A move lives on the tenant's row while the tenant is MOVING (`move_*` columns). Each write locks
the row and takes its status change through the same rule as every transition
(`tenancy.status.decide(..., moving=True)`: only these writes enter or leave MOVING), with its
audit events in the transaction:

    begin      ACTIVE -> MOVING, the move recorded (phase PREPARING), MOVE_REQUESTED; the target
               checked under the locks placement takes (`infra.db.servers.lock_loads`), and held
               from here on: a server's load counts the moves on their way to it
    switch     MOVING -> ACTIVE on the target: server, jdbcUrl and status in one UPDATE (the
               epoch trigger raises `epoch` once), TENANT_MOVED, the source kept in
               `retained_storage` until it is dropped
    roll_back  MOVING -> ACTIVE on the source, MOVE_FAILED or MOVE_CANCELLED

A repeat of a write that is done is a no-op, so the workflow's activities may run again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantRepository, TransitionRefused, append_event
from infra.db.servers import lock_loads
from tenancy.fleet import StorageServer, candidates, choose_server, no_room_reason, unavailable
from tenancy.models import (
    EventAction,
    MovePhase,
    RetainedSource,
    SlaTier,
    StorageMode,
    Tenant,
)
from tenancy.naming import server_authority, workflow_actor
from tenancy.status import Decision, TenantStatus, decide
from workflows.move.contracts import move_workflow_id

__all__ = [
    "MoveConflict",
    "MoveRepository",
    "MoveTargetRefused",
    "RetainedSource",
    "TenantGone",
    "UpdateOutcome",
]

_CLEAR_MOVE = """
    move_requested_at = NULL, move_requested_by = NULL, move_reason = NULL,
    move_from_server = NULL, move_to_server = NULL, move_phase = NULL
"""


class TenantGone(Exception):
    """No tenant row with this id."""


class MoveConflict(Exception):
    """The tenant's status does not allow the write (a move needs ACTIVE; an update of a
    DELETED tombstone)."""

    def __init__(self, message: str, status: TenantStatus) -> None:
        super().__init__(message)
        self.status = status


class MoveTargetRefused(Exception):
    """The move's target may not take the tenant; the message says why (unknown server, the
    tenant's own, not ACTIVE, no room, not the tenant's storage mode)."""


@dataclass(frozen=True)
class UpdateOutcome:
    """What an update did: the tenant afterwards, and whether it began a move."""

    tenant: Tenant
    moving: bool


@dataclass(frozen=True)
class _Row:
    status: TenantStatus
    server: str | None
    tier: SlaTier
    mode: StorageMode
    name: str


async def _lock(conn: AsyncConnection[Any], tenant_id: str) -> _Row:
    cur = await conn.execute(
        "SELECT status, storage_server, sla_tier, storage_mode, name FROM tenants "
        "WHERE id = %s FOR UPDATE",
        (tenant_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise TenantGone(tenant_id)
    status, server, tier, mode, name = row
    return _Row(TenantStatus(status), server, SlaTier(tier), StorageMode(mode), name)


def _configured(fleet: Sequence[StorageServer], name: str) -> StorageServer | None:
    return next((server for server in fleet if server.name == name), None)


async def _target(
    conn: AsyncConnection[Any],
    row: _Row,
    to_server: str | None,
    pool: str,
    fleet: Sequence[StorageServer],
) -> str:
    """The server the tenant moves to, checked (its row locked) as placement checks one. Never
    one on the tenant's own PostgreSQL server (two entries may name one host and port): its
    storage there has the same name as the source's."""
    current = _configured(fleet, row.server) if row.server else None
    here = server_authority(current.dsn) if current else None
    if to_server is None:
        # Placement in the pool, never the tenant's own server.
        choices = [
            s
            for s in candidates(fleet, pool, row.mode)
            if s.name != row.server and server_authority(s.dsn) != here
        ]
        chosen = choose_server(choices, await lock_loads(conn, [s.name for s in choices]))
        if chosen is None:
            raise MoveTargetRefused(
                f"{no_room_reason(pool, row.tier, row.mode)} (other than {row.server})"
            )
        return chosen.name
    server = _configured(fleet, to_server)
    if server is None:
        raise MoveTargetRefused(f"unknown storage server {to_server}")
    if to_server == row.server:
        raise MoveTargetRefused(f"tenant is already on storage server {to_server}")
    if not server.takes(row.mode):
        raise MoveTargetRefused(
            f"storage server {to_server} does not take {row.mode.value} tenants"
        )
    why = unavailable(server, (await lock_loads(conn, [to_server]))[to_server])
    if why is not None:
        raise MoveTargetRefused(why)
    if server_authority(server.dsn) == here:
        raise MoveTargetRefused(
            f"storage server {to_server} is on the same PostgreSQL server as {row.server} "
            f"({here}), where the tenant's storage already is"
        )
    return to_server


class MoveRepository:
    """Guarded writes of tenants' moves and updates, and of the sources moves retained."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._tenants = TenantRepository(pool)

    async def begin(
        self,
        tenant_id: str,
        actor: str,
        reason: str | None,
        to_server: str | None,
        fleet: Sequence[StorageServer],
        placement: Mapping[SlaTier, str],
    ) -> Tenant:
        """Record a move of an ACTIVE tenant to `to_server` (None: placement in its tier's
        pool, never its current server): MOVING with the move (phase PREPARING), its
        MOVE_REQUESTED and status events. `TenantGone`, `MoveConflict` (not ACTIVE) or
        `MoveTargetRefused` (saying why)."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, tenant_id)
            await self._begin(conn, tenant_id, row, actor, reason, to_server, fleet, placement)
        return await self.tenant(tenant_id)

    async def _begin(
        self,
        conn: AsyncConnection[Any],
        tenant_id: str,
        row: _Row,
        actor: str,
        reason: str | None,
        to_server: str | None,
        fleet: Sequence[StorageServer],
        placement: Mapping[SlaTier, str],
    ) -> None:
        if decide(row.status, TenantStatus.MOVING, moving=True) is not Decision.APPLY:
            raise MoveConflict(
                f"tenant {tenant_id} is {row.status.value}; a move needs ACTIVE"
                + ("; a move is under way" if row.status is TenantStatus.MOVING else ""),
                row.status,
            )
        if row.server is None:
            raise MoveConflict(f"tenant {tenant_id} is on no storage server", row.status)
        target = await _target(conn, row, to_server, placement[row.tier], fleet)
        await conn.execute(
            """
            UPDATE tenants
            SET status = %(moving)s, status_reason = NULL, updated_at = clock_timestamp(),
                move_requested_at = clock_timestamp(), move_requested_by = %(actor)s,
                move_reason = %(reason)s, move_from_server = storage_server,
                move_to_server = %(target)s, move_phase = %(phase)s
            WHERE id = %(id)s AND status = %(active)s
            """,
            {
                "moving": TenantStatus.MOVING.value,
                "active": TenantStatus.ACTIVE.value,
                "actor": actor,
                "reason": reason,
                "target": target,
                "phase": MovePhase.PREPARING.value,
                "id": tenant_id,
            },
        )
        await append_event(
            conn,
            tenant_id,
            actor,
            EventAction.MOVE_REQUESTED,
            reason=f"{row.server} -> {target}" + (f": {reason}" if reason else ""),
        )
        await append_event(
            conn,
            tenant_id,
            actor,
            EventAction.STATUS_CHANGED,
            TenantStatus.ACTIVE,
            TenantStatus.MOVING,
            reason,
        )

    async def set_phase(self, tenant_id: str, phase: MovePhase) -> bool:
        """Record where the tenant's move stands; False when the tenant is not MOVING."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE tenants SET move_phase = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status = %s
                RETURNING id
                """,
                (phase.value, tenant_id, TenantStatus.MOVING.value),
            )
            return await cur.fetchone() is not None

    async def set_status_reason(self, tenant_id: str, reason: str | None) -> bool:
        """Show why the move waits (a rollback that cannot finish yet) in `statusReason`, or
        clear it; False when the tenant is not MOVING."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE tenants SET status_reason = %s, updated_at = clock_timestamp()
                WHERE id = %s AND status = %s
                RETURNING id
                """,
                (reason, tenant_id, TenantStatus.MOVING.value),
            )
            return await cur.fetchone() is not None

    async def switch(
        self, tenant_id: str, to_server: str, jdbc_url: str, retained: RetainedSource
    ) -> None:
        """In one transaction: the tenant ACTIVE on `to_server` at `jdbc_url` (one UPDATE, so
        `epoch` + 1), its move cleared, TENANT_MOVED (from -> to) and its status event, and
        the source kept in `retained_storage`. A repeat after success (the tenant ACTIVE on
        `to_server`) is a no-op; `TransitionRefused` for a tenant not moving to `to_server`."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, tenant_id)
            cur = await conn.execute(
                "SELECT move_from_server, move_to_server FROM tenants WHERE id = %s",
                (tenant_id,),
            )
            moving = await cur.fetchone()
            assert moving is not None
            source, target = moving
            if row.status is TenantStatus.ACTIVE and row.server == to_server:
                return
            if (
                decide(row.status, TenantStatus.ACTIVE, moving=True) is not Decision.APPLY
                or target != to_server
            ):
                raise TransitionRefused(tenant_id, row.status, TenantStatus.ACTIVE)
            await conn.execute(
                f"""
                UPDATE tenants
                SET storage_server = %s, jdbc_url = %s, status = %s, status_reason = NULL,
                    updated_at = clock_timestamp(), {_CLEAR_MOVE}
                WHERE id = %s AND status = %s
                """,
                (
                    to_server,
                    jdbc_url,
                    TenantStatus.ACTIVE.value,
                    tenant_id,
                    TenantStatus.MOVING.value,
                ),
            )
            actor = workflow_actor(move_workflow_id(tenant_id))
            moved = f"{source} -> {to_server}"
            await append_event(conn, tenant_id, actor, EventAction.TENANT_MOVED, reason=moved)
            await append_event(
                conn,
                tenant_id,
                actor,
                EventAction.STATUS_CHANGED,
                TenantStatus.MOVING,
                TenantStatus.ACTIVE,
                f"moved {moved}",
            )
            await conn.execute(
                """
                INSERT INTO retained_storage
                    (tenant_id, server, mode, database, schema_name, drop_after)
                VALUES (%s, %s, %s, %s, %s, %s)
                """,
                (
                    tenant_id,
                    retained.server,
                    retained.mode.value,
                    retained.database,
                    retained.schema_name,
                    retained.drop_after,
                ),
            )

    async def roll_back(
        self, tenant_id: str, reason: str, *, cancelled: bool, actor: str | None = None
    ) -> None:
        """The tenant ACTIVE again on its source, its move cleared, with MOVE_FAILED (or
        MOVE_CANCELLED) and its status event; `statusReason` says why. A repeat (the tenant
        ACTIVE) is a no-op; `TransitionRefused` from any other status."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, tenant_id)
            decision = decide(row.status, TenantStatus.ACTIVE, moving=True)
            if decision is Decision.NO_OP:
                return
            if decision is Decision.REFUSE:
                raise TransitionRefused(tenant_id, row.status, TenantStatus.ACTIVE)
            await conn.execute(
                f"""
                UPDATE tenants
                SET status = %s, status_reason = %s, updated_at = clock_timestamp(),
                    {_CLEAR_MOVE}
                WHERE id = %s AND status = %s
                """,
                (TenantStatus.ACTIVE.value, reason, tenant_id, TenantStatus.MOVING.value),
            )
            who = actor or workflow_actor(move_workflow_id(tenant_id))
            action = EventAction.MOVE_CANCELLED if cancelled else EventAction.MOVE_FAILED
            await append_event(conn, tenant_id, who, action, reason=reason)
            await append_event(
                conn,
                tenant_id,
                who,
                EventAction.STATUS_CHANGED,
                TenantStatus.MOVING,
                TenantStatus.ACTIVE,
                reason,
            )

    async def retained_due(self, now: datetime) -> list[RetainedSource]:
        """The retained sources whose `drop_after` has come and that are not dropped yet,
        oldest first."""
        async with (
            self._pool.connection() as conn,
            conn.cursor(row_factory=class_row(RetainedSource)) as cur,
        ):
            await cur.execute(
                """
                SELECT id, tenant_id, server, mode, database, schema_name, retained_at,
                       drop_after, dropped_at
                FROM retained_storage
                WHERE dropped_at IS NULL AND drop_after <= %s
                ORDER BY drop_after, id
                """,
                (now,),
            )
            due: list[RetainedSource] = await cur.fetchall()
        return due

    async def release_retained(self, tenant_id: str, server: str) -> None:
        """The tenant moves back onto `server`, where a source of an earlier move of it is
        kept: that storage becomes the move's target (its copy empties it first), so it is
        recorded as no longer kept, and never dropped when its retention ends."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE retained_storage SET dropped_at = clock_timestamp() "
                "WHERE tenant_id = %s AND server = %s AND dropped_at IS NULL",
                (tenant_id, server),
            )

    async def mark_dropped(self, retained_id: int) -> None:
        """Record that a retained source was dropped (a repeat keeps the first time)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE retained_storage SET dropped_at = clock_timestamp() "
                "WHERE id = %s AND dropped_at IS NULL",
                (retained_id,),
            )

    async def update(
        self,
        tenant_id: str,
        actor: str,
        *,
        name: str | None,
        tier: SlaTier | None,
        fleet: Sequence[StorageServer],
        placement: Mapping[SlaTier, str],
    ) -> UpdateOutcome:
        """A new name and/or tier, with TENANT_UPDATED (each field's old -> new), in one
        transaction. A tier whose pool is not the pool of the tenant's server begins a move
        by placement in the new pool there too (as `begin`, with its refusals; nothing is
        changed then). A DELETED tombstone is `MoveConflict`; no change, no event."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await _lock(conn, tenant_id)
            if row.status is TenantStatus.DELETED:
                raise MoveConflict(f"tenant {tenant_id} is DELETED", row.status)
            changes = []
            if name is not None and name != row.name:
                changes.append(f"name: {row.name!r} -> {name!r}")
            new_tier = tier if tier is not None and tier is not row.tier else None
            if new_tier is not None and row.status is TenantStatus.MOVING:
                # Its target was chosen for the tier it has: the move ends first.
                raise MoveConflict(f"tenant {tenant_id} is MOVING; a move is under way", row.status)
            if new_tier is not None:
                changes.append(f"slaTier: {row.tier.value} -> {new_tier.value}")
            if not changes:
                return UpdateOutcome(await self.tenant(tenant_id), moving=False)
            server = _configured(fleet, row.server) if row.server else None
            moves = (
                new_tier is not None and server is not None and placement[new_tier] != server.pool
            )
            await conn.execute(
                """
                UPDATE tenants
                SET name = coalesce(%s, name), sla_tier = coalesce(%s, sla_tier),
                    updated_at = clock_timestamp()
                WHERE id = %s
                """,
                (name, new_tier.value if new_tier else None, tenant_id),
            )
            await append_event(
                conn, tenant_id, actor, EventAction.TENANT_UPDATED, reason="; ".join(changes)
            )
            if moves:
                assert new_tier is not None
                moved = _Row(row.status, row.server, new_tier, row.mode, name or row.name)
                await self._begin(
                    conn, tenant_id, moved, actor, f"tier {new_tier.value}", None, fleet, placement
                )
        return UpdateOutcome(await self.tenant(tenant_id), moving=moves)

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant as it stands (`TenantGone` without a row)."""
        tenant = await self._tenants.get(tenant_id)
        if tenant is None:
            raise TenantGone(tenant_id)
        return tenant
