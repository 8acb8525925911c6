"""Moves under faults: PostgreSQL servers of a test's own (to stop and start again; never the
session's shared ones), the settings and worker environment of a fleet over them, and looks
at each side of a move as a service and as the superuser (does the service's role still write
there, where does the move stand, what holds a lock).

A storage server here is an `EmbeddedPostgres` with the deployment's roles
(`storage_layout()`, as `extra_pg_servers` prepares its own) and a storage database `tenants`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.postgres import EmbeddedPostgres
from devstack.roles import Login, apply_layout, login_url
from infra.db.moves import APPLICATION_NAME
from infra.db.storage import lock_storage
from tenancy.models import MovePhase
from tenancy.naming import storage_name
from tenancy.settings import Settings
from tests.faults.conftest import settings_env
from tests.support.polling import eventually
from tests.support.servers import free_port
from tests.support.storage_fleet import STORAGE_DATABASE, platform_url, storage_layout

BACKEND = "backend_service"
# A table of the backend service's in the tenant's storage, which a test may lock.
HELD_TABLE = "held"
_LOCK_HELD = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE")


@contextmanager
def own_servers(base: Path, count: int) -> Iterator[list[EmbeddedPostgres]]:
    """`count` embedded PostgreSQL servers with the deployment's roles, stopped at the end."""
    with ExitStack() as stack:
        servers = []
        for index in range(count):
            server = EmbeddedPostgres(base / f"pg-{index}" / "data", free_port(), durable=False)
            server.start()
            stack.callback(server.stop)
            apply_layout(server.url, storage_layout())
            servers.append(server)
        yield servers


def server_entry(name: str, superuser_url: str, pool: str, max_tenants: int = 10) -> dict[str, Any]:
    """A `PLATFORM_STORAGE_SERVERS` entry: the platform's role on the server's `tenants`."""
    return {
        "name": name,
        "url": platform_url(superuser_url),
        "pool": pool,
        "maxTenants": max_tenants,
    }


def move_worker_env(settings: Settings, keys_dir: Path) -> dict[str, str]:
    """The environment of `python worker.py` for a fleet's moves: the fault suite's, with the
    storage servers, the placement and the moves' settings."""
    servers = [s.model_dump(mode="json", by_alias=True) for s in settings.storage_servers]
    placement = {tier.value: pool for tier, pool in settings.placement.items()}
    return settings_env(settings, keys_dir) | {
        "PLATFORM_STORAGE_SERVERS": json.dumps(servers),
        "PLATFORM_PLACEMENT": json.dumps(placement),
        "PLATFORM_MOVE_SOURCE_RETENTION": str(settings.move_source_retention.total_seconds()),
        "PLATFORM_MOVE_COPY_TIMEOUT": str(settings.move_copy_timeout.total_seconds()),
    }


def on_storage(superuser_url: str) -> str:
    """The superuser's URL of a server's storage database."""
    return make_conninfo(superuser_url, dbname=STORAGE_DATABASE)


def service_writes(superuser_url: str, tenant_id: str) -> bool:
    """Whether the backend service's role may write into the SCHEMA tenant's storage on the
    server: a table made and a row written, in a transaction rolled back (nothing is left)."""
    schema = storage_name(tenant_id)
    url = login_url(superuser_url, Login(BACKEND), STORAGE_DATABASE)
    with psycopg.connect(url) as conn:
        try:
            table = sql.Identifier(schema, "write_probe")
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id int)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


def add_held_table(superuser_url: str, tenant_id: str, rows: int = 1) -> None:
    """The backend service's table `held` in the tenant's storage, with `rows` rows of about
    100 bytes each (a big tenant: its copy and verification take a while)."""
    table = sql.Identifier(storage_name(tenant_id), HELD_TABLE)
    with psycopg.connect(on_storage(superuser_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, pad text)").format(table))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT i, md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text)"
                " FROM generate_series(1, %s) AS i"
            ).format(table),
            (rows,),
        )
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(table, sql.Identifier(BACKEND)))


@contextmanager
def table_locked(superuser_url: str, tenant_id: str) -> Iterator[None]:
    """`held` locked ACCESS EXCLUSIVE by the superuser (not a service: a freeze leaves this
    session alone) until the block ends: a dump or a read of it waits."""
    table = sql.Identifier(storage_name(tenant_id), HELD_TABLE)
    with psycopg.connect(on_storage(superuser_url)) as conn:
        conn.execute(_LOCK_HELD.format(table))
        try:
            yield
        finally:
            conn.rollback()


def waiting_on_lock(
    superuser_url: str, application: str | None = None, database: str | None = None
) -> int:
    """How many sessions on the server wait for a lock (of `application`, on `database` only,
    if given)."""
    with psycopg.connect(superuser_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND (%(app)s::text IS NULL OR application_name = %(app)s)"
            " AND (%(db)s::text IS NULL OR datname = %(db)s)",
            {"app": application, "db": database},
        ).fetchone()
    assert row is not None
    return int(row[0])


class PhaseHold:
    """Holds a move in `phase` by a lock the phase's step needs, taken before the move starts:

        PREPARING  the target's storage lock (StorageAdmin.ensure waits)
        FROZEN     the source's storage lock (the freeze's revoke waits)
        COPYING    `held` on the source (the copy's pg_dump waits)
        VERIFYING  as COPYING; once the dump waits, a second lock of `held` is queued behind
                   the first, which is let go: the dump takes the table, the second lock is
                   granted when the dump ends, and the verification's read waits behind it
        SWITCHED   as COPYING; once the dump waits, `retained_storage` of the metadata
                   database (not before: PREPARING writes it), and `held` let go: the phase is
                   recorded, the switch's transaction waits to record the kept source

    `reached()` returns once the move waits there; `release()` lets it go on."""

    def __init__(
        self, phase: MovePhase, tenant_id: str, source: str, target: str, metadata_url: str
    ) -> None:
        self.phase = phase
        self._schema = storage_name(tenant_id)
        self._tenant_id = tenant_id
        self._source, self._target, self._metadata_url = source, target, metadata_url
        self._holders: list[psycopg.AsyncConnection[Any]] = []

    async def take(self) -> None:
        """Take the phase's lock (before the move is asked for)."""
        if self.phase in (MovePhase.PREPARING, MovePhase.FROZEN):
            server = self._target if self.phase is MovePhase.PREPARING else self._source
            holder = await psycopg.AsyncConnection.connect(on_storage(server), autocommit=True)
            await lock_storage(holder, self._schema, session=True)
        else:
            holder = await self._lock_held()
        self._holders.append(holder)

    async def _lock_held(self) -> psycopg.AsyncConnection[Any]:
        holder = await psycopg.AsyncConnection.connect(on_storage(self._source))
        await holder.execute(_LOCK_HELD.format(sql.Identifier(self._schema, HELD_TABLE)))
        return holder

    async def reached(self, api: httpx.AsyncClient) -> dict[str, Any]:
        """The tenant once its move waits in the phase."""
        if self.phase is MovePhase.VERIFYING:
            await self._wait_lock(self._source, APPLICATION_NAME)
            queued = asyncio.create_task(self._lock_held())
            await eventually(
                lambda: asyncio.to_thread(waiting_on_lock, self._source), lambda n: n >= 2
            )
            first = self._holders.pop(0)
            await first.close()
            self._holders.append(await queued)
        elif self.phase is MovePhase.SWITCHED:
            await self._wait_lock(self._source, APPLICATION_NAME)
            holder = await psycopg.AsyncConnection.connect(self._metadata_url)
            await holder.execute("LOCK TABLE retained_storage IN ACCESS EXCLUSIVE MODE")
            first = self._holders.pop(0)
            await first.close()
            self._holders.append(holder)
        tenant: dict[str, Any] = await eventually(
            lambda: tenant_of(api, self._tenant_id),
            lambda t: (t.get("move") or {}).get("phase") == self.phase.value,
            timeout=60,
        )
        if self.phase is MovePhase.SWITCHED:
            database = conninfo_to_dict(self._metadata_url).get("dbname")
            await self._wait_lock(self._metadata_url, database=str(database))
        elif self.phase in (MovePhase.COPYING, MovePhase.VERIFYING):
            await self._wait_lock(self._source)
        else:
            server = self._target if self.phase is MovePhase.PREPARING else self._source
            await self._wait_lock(server)
        return tenant

    async def _wait_lock(
        self, url: str, application: str | None = None, database: str | None = None
    ) -> None:
        await eventually(
            lambda: asyncio.to_thread(waiting_on_lock, url, application, database),
            lambda waiting: waiting > 0,
            timeout=60,
        )

    async def release(self) -> None:
        """Let every lock go."""
        for holder in self._holders:
            await holder.close()
        self._holders.clear()


async def tenant_of(api: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    """The tenant as the API shows it."""
    return (await api.get(f"/api/tenants/{tenant_id}")).json()  # type: ignore[no-any-return]


async def tenant_becomes(
    api: httpx.AsyncClient, tenant_id: str, status: str, timeout: float = 120
) -> dict[str, Any]:
    """The tenant once its status is `status`."""
    found: dict[str, Any] = await eventually(
        lambda: tenant_of(api, tenant_id), lambda t: t["status"] == status, timeout=timeout
    )
    return found


async def actions(api: httpx.AsyncClient, tenant_id: str) -> list[str]:
    """The tenant's audit actions, oldest first."""
    events = (await api.get(f"/api/tenants/{tenant_id}/events")).json()["items"]
    return [e["action"] for e in events]
