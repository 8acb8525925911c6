"""The storage steps of a tenant's move between PostgreSQL servers: freeze the source, copy it
onto the target, verify the copy; or unfreeze the source again.

Every function connects as the platform's role, with the URL of each server as the fleet has it
(`StorageServer.url`); nobody is superuser. `location` names the storage on both servers (the
same schema or database name), `service_roles` are the services' roles as StorageAdmin grants
them.

- `freeze`: the services' roles lose their grants on the source's storage (storage.revoke_storage)
  and their sessions that hold it are ended, so nothing writes there any more.
- `copy_storage`: `pg_dump -Fc` of the source's storage as the platform's role (it reads the
  services' tables through `pg_read_all_data`, see infra.db.backup), restored into the target's
  storage, which `StorageAdmin.ensure` made and granted (the move's PREPARING). Each object is
  restored by its owner (infra.db.restore_plan), so each service owns exactly its objects there
  too, and the grants between services come along. The target is emptied first: a retried copy
  starts from nothing.
- `verify`: every table's row count and a checksum of its rows, on both sides.
- `unfreeze`: the grants as at provisioning again (storage.grant_storage).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Coroutine, Iterable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import make_conninfo

from infra.db.backup import BackupFailed, DumpCommand, dump_command, dump_storage
from infra.db.binaries import (
    ClientConnection,
    client_connection,
    error_summary,
    pg_program,
    run_program,
)
from infra.db.restore_plan import SECTIONS, RestorePlan, RestoreRun, plan_restore
from infra.db.storage import grant_storage, lock_storage, revoke_storage
from tenancy.models import CamelModel, StorageLocation, StorageMode

_log = logging.getLogger(__name__)
# Shown in pg_stat_activity, so an operator sees what the move's sessions are.
APPLICATION_NAME = "platform-move"
FREEZE_TIMEOUT = 30.0
# How long one pg_terminate_backend waits for its session to be gone (milliseconds).
_TERMINATE_WAIT_MS = 500
_CONNECT_TIMEOUT = 10

# The service sessions holding a lock on the schema or on one of its relations (SCHEMA mode).
_SCHEMA_HOLDERS = """
SELECT DISTINCT a.pid
FROM pg_stat_activity a
JOIN pg_locks l ON l.pid = a.pid
JOIN pg_namespace s ON s.nspname = %(schema)s
WHERE a.usename = ANY(%(roles)s)
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (
    (l.locktype = 'relation'
     AND l.relation IN (SELECT c.oid FROM pg_class c WHERE c.relnamespace = s.oid))
    OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass AND l.objid = s.oid)
  )
"""
# The service sessions connected to the tenant's database (DATABASE mode).
_DATABASE_SESSIONS = """
SELECT pid FROM pg_stat_activity WHERE datname = %(database)s AND usename = ANY(%(roles)s)
"""

# The objects of the schema and their owners, in the order they are dropped: tables (their
# indexes, constraints, triggers and owned sequences go with them, and, by CASCADE, whatever of
# another service depends on them), views, sequences, composite types, routines, other types.
_OBJECTS = """
WITH s AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
SELECT CASE WHEN c.relkind IN ('r', 'p', 'f') THEN 1 WHEN c.relkind IN ('v', 'm') THEN 2
            WHEN c.relkind = 'S' THEN 3 ELSE 4 END,
       pg_get_userbyid(c.relowner), c.relkind::text, c.relname, '{}'::text[], '{}'::text[]
FROM pg_class c, s WHERE c.relnamespace = s.oid AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c')
UNION ALL
SELECT 5, pg_get_userbyid(p.proowner), 'routine', p.proname,
       ARRAY(SELECT n.nspname FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(type, i)
             JOIN pg_type t ON t.oid = a.type JOIN pg_namespace n ON n.oid = t.typnamespace
             ORDER BY a.i),
       ARRAY(SELECT t.typname::text FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(type, i)
             JOIN pg_type t ON t.oid = a.type ORDER BY a.i)
FROM pg_proc p, s WHERE p.pronamespace = s.oid
UNION ALL
SELECT 6, pg_get_userbyid(t.typowner), 'type ' || t.typtype::text, t.typname, '{}', '{}'
FROM pg_type t, s WHERE t.typnamespace = s.oid AND t.typtype IN ('d', 'e', 'r')
ORDER BY 1, 2, 4
"""
_DROP_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "c": "TYPE",
    "routine": "ROUTINE",
    "type d": "DOMAIN",
    "type e": "TYPE",
    "type r": "TYPE",
}

_SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s"
_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"

_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname
"""
# Each row's text, hashed; the two halves of the hashes summed, so the checksum needs no sort
# and no memory of the table (sum() of bigint is numeric: it never overflows). Equal
# multisets of rows sum equally.
_TABLE_SUM = """
SELECT count(*),
       coalesce(sum(('x' || left(h, 16))::bit(64)::bigint), 0)::text || '/'
       || coalesce(sum(('x' || right(h, 16))::bit(64)::bigint), 0)::text
FROM (SELECT md5(t::text) AS h FROM {} AS t) AS hashed
"""
# A row's text depends on these settings; both sides read with the same.
_STABLE_TEXT = (
    "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'postgres'; "
    "SET extra_float_digits TO 3; SET bytea_output TO 'hex'; SET lc_monetary TO 'C'; "
    # A table with row-level security fails instead of counting only the rows it shows.
    "SET row_security TO off"
)


class MoveStorageError(Exception):
    """A storage step of a move did not finish. `transient`: the same call may succeed later
    unchanged (a server unreachable, the time ran out); otherwise something must change."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class FreezeIncomplete(MoveStorageError):
    """Service sessions holding the storage were still there at the freeze's deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class CopyFailed(MoveStorageError):
    """The copy did not finish; the target may hold part of it (the next copy empties it)."""


class CopyReport(CamelModel):
    """A finished copy: the archive's size, the tables with rows restored, how long it took."""

    bytes_dumped: int
    tables: int
    seconds: float


class TableMismatch(CamelModel):
    """A table that differs between source and target; `None` on a side that lacks it."""

    table: str
    source_rows: int | None
    target_rows: int | None
    source_checksum: str | None
    target_checksum: str | None

    @property
    def reason(self) -> str:
        """What differs, in words."""
        if self.source_rows is None:
            return f"table {self.table} is on the target only"
        if self.target_rows is None:
            return f"table {self.table} is missing on the target"
        if self.source_rows != self.target_rows:
            return f"table {self.table} has {self.target_rows} rows, not {self.source_rows}"
        return f"table {self.table} has other rows than on the source"


def _describe(location: StorageLocation) -> str:
    if location.mode is StorageMode.SCHEMA:
        return f"schema {location.schema_name} of database {location.database}"
    return f"database {location.database}"


def _storage_name(location: StorageLocation) -> str:
    return location.schema_name if location.mode is StorageMode.SCHEMA else location.database


def _on_database(server_url: str, database: str) -> str:
    return make_conninfo(server_url, dbname=database, connect_timeout=_CONNECT_TIMEOUT)


async def freeze(
    server_url: str,
    location: StorageLocation,
    service_roles: Sequence[str],
    *,
    timeout: float = FREEZE_TIMEOUT,
) -> None:
    """Close the storage at `location` on the server of `server_url` to `service_roles`: their
    grants revoked, their sessions that hold the tenant's objects (SCHEMA) or are connected to
    its database (DATABASE) ended, waiting (up to `timeout` seconds) until none is left, else
    `FreezeIncomplete`. Safe when repeated.

    Why no write is lost (the race of a statement that passed its privilege check before the
    REVOKE): a statement locks each relation it uses before it runs and keeps the lock until
    its transaction ends; right after taking a lock, PostgreSQL applies the catalog changes
    committed meanwhile and, if there were any, looks the name up again, checking the
    schema's USAGE again. So once the REVOKE has committed, a statement that passed its check
    holds a lock that the query below sees, and its session is ended: its transaction never
    commits, so no write of it is acknowledged. Any later statement fails its check, and so
    do prepared plans (a schema's change invalidates them: they are planned, and checked,
    again). A write that committed before is in the source, so in the copy. In DATABASE mode
    every service session on the database is ended, and `public`'s USAGE is revoked too: a
    session that passed its CONNECT check but was not yet listed reaches nothing. VERIFYING
    compares every table's rows afterwards anyway.
    """
    roles = list(service_roles)
    await revoke_storage(server_url, location, roles)
    if not roles:
        return
    if location.mode is StorageMode.SCHEMA:
        conninfo = _on_database(server_url, location.database)
        query, params = _SCHEMA_HOLDERS, {"schema": location.schema_name, "roles": roles}
    else:
        conninfo = make_conninfo(server_url, connect_timeout=_CONNECT_TIMEOUT)
        query, params = _DATABASE_SESSIONS, {"database": location.database, "roles": roles}
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while True:
            pids = [pid for (pid,) in await (await conn.execute(query, params)).fetchall()]
            if not pids:
                return
            if time.monotonic() > deadline:
                raise FreezeIncomplete(
                    f"{len(pids)} service sessions still hold {_describe(location)} "
                    f"after {timeout:g}s (pids {sorted(pids)})"
                )
            _log.info("freeze of %s ends sessions %s", _describe(location), sorted(pids))
            # Waits for each to be gone; one that outlives the wait is asked again.
            await conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM unnest(%s::int[]) AS pid",
                (_TERMINATE_WAIT_MS, pids),
            )


async def unfreeze(
    server_url: str, location: StorageLocation, service_roles: Sequence[str]
) -> None:
    """Grant the storage at `location` to `service_roles` again, as at provisioning."""
    await grant_storage(server_url, location, service_roles)


async def copy_storage(
    source_url: str,
    target_url: str,
    location: StorageLocation,
    *,
    timeout: float,
    target: StorageLocation | None = None,
) -> CopyReport:
    """Copy the storage at `location` from the source server onto the target's (existing,
    granted) storage at `target` (default: `location`; a SCHEMA tenant's database is its
    server's storage database, which may be named otherwise there), emptied first; see the
    module's docstring. `timeout` (seconds) bounds all of it. Raises `CopyFailed`; the
    source is only read."""
    into = target or location
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    started = time.monotonic()
    try:
        dump = dump_command(source_url, location, application_name=APPLICATION_NAME, compress=False)
        restore = client_connection(target_url, into.database, application_name=APPLICATION_NAME)
        pg_restore = pg_program("pg_restore")
    except BackupFailed as exc:
        raise CopyFailed(str(exc), transient=False) from None
    except (FileNotFoundError, psycopg.ProgrammingError):
        raise CopyFailed(
            "no pg_restore, or the target's URL is not a libpq URL", transient=False
        ) from None
    try:
        async with (
            asyncio.timeout(timeout),
            await _connect_target(target_url, into) as conn,
        ):
            # Until this connection closes: another copy onto the same storage (an attempt
            # that timed out but still runs, and its retry) would empty it under this one.
            await lock_storage(conn, _storage_name(into), session=True)
            with tempfile.TemporaryDirectory(prefix="platform-move-") as work:
                archive = Path(work) / "storage.dump"
                size = await _dump(dump, source_url, location, archive)
                plan = await _plan(pg_restore, archive)
                await _empty(conn, into)
                for step in plan.steps:
                    await _at_once(
                        _restore(pg_restore, restore, archive, run, target_url) for run in step
                    )
    except TimeoutError:
        raise CopyFailed(
            f"copy of {_describe(location)} did not finish within {timeout:g}s", transient=True
        ) from None
    except psycopg.OperationalError as exc:
        raise CopyFailed(
            f"lost the target server: {error_summary(str(exc), None)}", transient=True
        ) from None
    except psycopg.Error as exc:
        raise CopyFailed(
            f"cannot empty the target's {_describe(location)}: {exc.sqlstate} "
            f"{error_summary(str(exc), None)}",
            transient=False,
        ) from None
    report = CopyReport(bytes_dumped=size, tables=plan.tables, seconds=time.monotonic() - started)
    _log.info(
        "copied %s (%d bytes, %d tables) in %.2fs",
        _describe(location),
        report.bytes_dumped,
        report.tables,
        report.seconds,
    )
    return report


async def _at_once(calls: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run `calls` together; the first failure cancels the others (killing their programs)."""
    tasks = [asyncio.create_task(call) for call in calls]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _dump(
    command: DumpCommand, source_url: str, location: StorageLocation, archive: Path
) -> int:
    """Dump the source's storage into `archive`; its size in bytes."""
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        await dump_storage(command, source_url, location, fd)
    except BackupFailed as exc:
        raise CopyFailed(f"dump of the source failed: {exc}", transient=exc.transient) from None
    finally:
        os.close(fd)
    return archive.stat().st_size


async def _list(pg_restore: Path, archive: Path, *options: str) -> str:
    returncode, out, err = await run_program(
        [str(pg_restore), "--list", *options, str(archive)], dict(os.environ)
    )
    if returncode != 0:
        message = error_summary(err.decode(errors="replace"), None)
        raise CopyFailed(f"pg_restore cannot read the archive: {message}", transient=False)
    return out.decode()


async def _plan(pg_restore: Path, archive: Path) -> RestorePlan:
    listing, *sections = await asyncio.gather(
        _list(pg_restore, archive, "--verbose"),
        *(_list(pg_restore, archive, f"--section={section}") for section in SECTIONS),
    )
    return plan_restore(listing, sections)


async def _empty(conn: psycopg.AsyncConnection[Any], location: StorageLocation) -> None:
    """Drop every object in the target's storage (`conn` is on its database), each as its
    owner, keeping the schema (or database) and its grants: what a copy cut short left."""
    params = {"schema": location.schema_name}
    async with conn.transaction():
        if not await (await conn.execute(_SCHEMA_EXISTS, params)).fetchone():
            raise CopyFailed(f"the target's {_describe(location)} does not exist", transient=False)
        objects = await (await conn.execute(_OBJECTS, params)).fetchall()
        for (_, owner), group in groupby(objects, key=lambda row: (row[0], row[1])):
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            for _, _, kind, name, arg_schemas, arg_types in group:
                target: sql.Composable = sql.Identifier(location.schema_name, name)
                if kind == "routine":
                    target = sql.SQL("{}({})").format(
                        target,
                        sql.SQL(", ").join(
                            sql.Identifier(schema, type_name)
                            for schema, type_name in zip(arg_schemas, arg_types, strict=True)
                        ),
                    )
                await conn.execute(
                    sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
                        sql.SQL(_DROP_KINDS[kind]), target
                    )
                )
            await conn.execute("RESET ROLE")
        left = await (await conn.execute(_OBJECTS, params)).fetchall()
    if left:
        names = ", ".join(sorted({row[3] for row in left}))
        raise CopyFailed(
            f"cannot empty the target's {_describe(location)}: {names}", transient=False
        )
    if objects:
        _log.info("emptied the target's %s of %d objects", _describe(location), len(objects))


async def _connect_target(
    target_url: str, location: StorageLocation
) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(
            _on_database(target_url, location.database), autocommit=True
        )
    except psycopg.OperationalError as exc:
        # At connect time psycopg carries no SQLSTATE: ask the server's own database.
        failure = error_summary(str(exc), None)
        try:
            async with await psycopg.AsyncConnection.connect(
                make_conninfo(target_url, connect_timeout=_CONNECT_TIMEOUT)
            ) as conn:
                cur = await conn.execute(_DATABASE_EXISTS, (location.database,))
                exists = await cur.fetchone() is not None
        except psycopg.OperationalError:
            raise CopyFailed(f"cannot reach the target server: {failure}", transient=True) from None
        if not exists:
            raise CopyFailed(
                f"the target's {_describe(location)} does not exist", transient=False
            ) from None
        raise CopyFailed(
            f"cannot connect to the target's {_describe(location)}: {failure}", transient=True
        ) from None


async def _restore(
    pg_restore: Path,
    client: ClientConnection,
    archive: Path,
    run: RestoreRun,
    target_url: str,
) -> None:
    """One pg_restore of `run`'s entries as its owner, in one transaction."""
    use_list = archive.with_name(f"run-{run.entries[0].dump_id}.list")
    use_list.write_text(run.use_list())
    argv = [
        str(pg_restore),
        *client.args,
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        f"--use-list={use_list}",
    ]
    if run.owner:
        argv.append(f"--role={run.owner}")
    argv.append(str(archive))
    returncode, _, err = await run_program(argv, client.env)
    if returncode != 0:
        # What follows is the failed statement's text: the error is the line before.
        output = err.decode(errors="replace").split("Command was:", 1)[0]
        message = error_summary(output, client.password)
        raise CopyFailed(
            f"pg_restore as {run.owner or 'the platform'} exited with {returncode}: {message}",
            transient=not await _reachable(target_url),
        )


async def _reachable(server_url: str) -> bool:
    """Whether the server answers now: a program's exit status does not tell a lost server
    (worth a retry) from a refusal."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            make_conninfo(server_url, connect_timeout=_CONNECT_TIMEOUT)
        )
    except psycopg.OperationalError:
        return False
    await conn.close()
    return True


async def verify(
    source_url: str,
    target_url: str,
    location: StorageLocation,
    target_location: StorageLocation | None = None,
) -> list[TableMismatch]:
    """Every table of the storage at `location` whose row count or content checksum differs
    between the source and the target (at `target_location`, default `location`) servers, or
    which is on one side only; `[]`: equal."""
    source, target = await asyncio.gather(
        _table_sums(source_url, location), _table_sums(target_url, target_location or location)
    )
    mismatches = []
    for table in sorted(source.keys() | target.keys()):
        here, there = source.get(table), target.get(table)
        if here != there:
            mismatches.append(
                TableMismatch(
                    table=table,
                    source_rows=here[0] if here else None,
                    target_rows=there[0] if there else None,
                    source_checksum=here[1] if here else None,
                    target_checksum=there[1] if there else None,
                )
            )
    return mismatches


async def _table_sums(server_url: str, location: StorageLocation) -> dict[str, tuple[int, str]]:
    """Each table's row count and checksum, all read in one snapshot."""
    async with await psycopg.AsyncConnection.connect(
        _on_database(server_url, location.database)
    ) as conn:
        await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        sums: dict[str, tuple[int, str]] = {}
        async with conn.transaction():
            await conn.execute(_STABLE_TEXT)
            tables = await (await conn.execute(_TABLES, (location.schema_name,))).fetchall()
            for (table,) in tables:
                cur = await conn.execute(
                    sql.SQL(_TABLE_SUM).format(sql.Identifier(location.schema_name, table))
                )
                row = await cur.fetchone()
                assert row is not None
                sums[table] = (int(row[0]), str(row[1]))
        return sums
