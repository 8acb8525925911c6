"""A backup of one tenant's storage with `pg_dump`, written atomically next to its final name.

What is dumped: SCHEMA mode, the schema `location.schema_name` of `location.database` (only it:
other tenants' schemas and `public` stay out); DATABASE mode, the whole database
`location.database`. The format is PostgreSQL's custom archive (`pg_dump -Fc`): compressed, and
`pg_restore` chooses at restore time what to restore and how.

Owners and grants stay in the archive (pg_dump ignores `--no-owner` for archive formats: it is a
`pg_restore` option). Restored by a superuser, the storage comes back in the same layout: the
platform's role owning the schema or database, each service's role its own tables, the grants
as they were. `pg_restore --no-owner --no-privileges` gives everything to the restoring role.

The dump runs as the platform's role, which reads the services' tables through the predefined
role `pg_read_all_data` (devstack.roles); a table with row-level security enabled makes pg_dump
refuse rather than write a partial dump.

On disk: pg_dump writes into a temporary file (mode 0600) in `directory`, which is fsynced,
hashed, linked as `{label}.{random}.dump` and the directory fsynced. Each call writes a file of
its own and never replaces one: two attempts of one backup (a zombie attempt and its retry) can
run at once, and the sha256 each returns is that of the file it names, for as long as the file
exists. A failure leaves nothing behind.

    backup = await take_backup(url, location, Path("/backups"), label="tenant-acme-1", timeout=600)
    # backup.path == "/backups/tenant-acme-1.3f9c2a7e.dump"
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.db.binaries import client_connection, error_summary, pg_program, run_program
from tenancy.models import CamelModel, StorageLocation, StorageMode

_log = logging.getLogger(__name__)
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,200}")
SUFFIX = ".dump"
# Shown in pg_stat_activity, so an operator sees what holds the locks.
APPLICATION_NAME = "platform-backup"

_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
_SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %s"


class Backup(CamelModel):
    """A finished dump: its absolute path, its size in bytes and its SHA-256 (hex)."""

    path: str
    size_bytes: int
    sha256: str


class BackupFailed(Exception):
    """No backup was taken, and nothing of it is left on disk.

    `transient` is true when the same call may succeed later unchanged: the storage server
    could not be reached or went away, or the time ran out. Otherwise something must be fixed
    first (a privilege, the directory, the binary)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class StorageNotFound(BackupFailed):
    """The tenant's schema or database does not exist: there is nothing to back up."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def check_label(label: str) -> str:
    """Return `label` unchanged, or raise `ValueError`: 1-200 of `[A-Za-z0-9._-]`."""
    if not _LABEL.fullmatch(label):
        raise ValueError(f"backup label {label!r} does not match ^[A-Za-z0-9._-]{{1,200}}$")
    return label


def _describe(location: StorageLocation) -> str:
    if location.mode is StorageMode.SCHEMA:
        return f"schema {location.schema_name} of database {location.database}"
    return f"database {location.database}"


def _schema_pattern(name: str) -> str:
    # pg_dump reads --schema as a pattern; inside double quotes every character is literal.
    return '"' + name.replace('"', '""') + '"'


async def _check_storage(server_url: str, location: StorageLocation) -> None:
    """Raise `StorageNotFound` when the location is missing, `BackupFailed` when the server
    cannot be asked (transient) or refuses the question (permanent)."""
    if location.mode is StorageMode.SCHEMA:
        url, query, name = (
            make_conninfo(server_url, dbname=location.database),
            _SCHEMA_EXISTS,
            location.schema_name,
        )
    else:
        url, query, name = server_url, _DATABASE_EXISTS, location.database
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute(query, (name,))
            found = await cur.fetchone() is not None
    except psycopg.OperationalError as exc:
        # At connect time psycopg carries no SQLSTATE: refused, unreachable and a database
        # that went away look alike, and all may pass.
        detail = exc.pgconn.error_message.decode(errors="replace") if exc.pgconn else str(exc)
        password = conninfo_to_dict(server_url).get("password")
        raise BackupFailed(
            f"cannot reach the storage server: {error_summary(detail, str(password or ''))}",
            transient=True,
        ) from None
    except psycopg.Error as exc:
        raise BackupFailed(
            f"cannot check {_describe(location)}: {exc.sqlstate} {error_summary(str(exc), None)}",
            transient=False,
        ) from None
    if not found:
        raise StorageNotFound(f"{_describe(location)} does not exist")


@dataclass(frozen=True)
class DumpCommand:
    """pg_dump's command line (no password in it), its environment (the password) and the
    password, to be masked in what pg_dump prints."""

    argv: list[str]
    env: dict[str, str]
    password: str | None


def dump_command(
    server_url: str,
    location: StorageLocation,
    *,
    pg_dump: Path | None = None,
    application_name: str = APPLICATION_NAME,
    compress: bool = True,
) -> DumpCommand:
    """The pg_dump of `location` (see the module's docstring) as the role of `server_url`;
    `pg_dump` defaults to the pgserver wheel's. Raises `BackupFailed` (permanent) when there is
    no pg_dump or `server_url` is not a libpq URL."""
    try:
        program = pg_dump if pg_dump is not None else pg_program("pg_dump")
        client = client_connection(server_url, location.database, application_name=application_name)
    except FileNotFoundError as exc:
        raise BackupFailed(str(exc), transient=False) from None
    except psycopg.ProgrammingError:
        # Not the URL itself in the message: it may carry the password.
        raise BackupFailed(
            "the storage server URL is not a valid libpq URL", transient=False
        ) from None
    argv = [str(program), "--format=custom", *client.args]
    if not compress:
        argv.append("--compress=0")
    if location.mode is StorageMode.SCHEMA:
        # --strict-names: a schema that vanished fails the dump instead of writing an empty one.
        argv += ["--strict-names", f"--schema={_schema_pattern(location.schema_name)}"]
    return DumpCommand(argv, client.env, client.password)


async def dump_storage(
    command: DumpCommand, server_url: str, location: StorageLocation, out_fd: int
) -> None:
    """Check that `location` exists, then run `command` with its output on `out_fd`. Raises
    `StorageNotFound` or `BackupFailed`; the caller bounds the time (pg_dump is killed when
    the task is cancelled)."""
    await _check_storage(server_url, location)
    try:
        returncode, _, stderr = await run_program(command.argv, command.env, out_fd)
    except OSError as exc:
        raise BackupFailed(f"cannot run {command.argv[0]}: {exc}", transient=False) from None
    if returncode != 0:
        message = error_summary(stderr.decode(errors="replace"), command.password)
        raise await _dump_failure(server_url, location, returncode, message)


def _seal(temp: Path, final: Path) -> Backup:
    """Flush the dump to disk, hash it, and give it its final name atomically; a link, not a
    rename, so an existing file of that name is never replaced (FileExistsError)."""
    with temp.open("rb") as dump:
        os.fsync(dump.fileno())
        digest = hashlib.file_digest(dump, "sha256").hexdigest()
        size = os.fstat(dump.fileno()).st_size
    os.link(temp, final)
    temp.unlink()
    directory = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return Backup(path=str(final), size_bytes=size, sha256=digest)


async def _dump_failure(
    server_url: str, location: StorageLocation, returncode: int, message: str
) -> BackupFailed:
    """The failure of a pg_dump that exited with `returncode`. Its exit status says only
    "failed": asking the server again tells a lost server (transient) or a vanished storage
    from a refusal (permanent)."""
    text = f"pg_dump of {_describe(location)} exited with {returncode}: {message}"
    try:
        await _check_storage(server_url, location)
    except StorageNotFound:
        return StorageNotFound(text)
    except BackupFailed as exc:
        return BackupFailed(text, transient=exc.transient)
    return BackupFailed(text, transient=False)


async def take_backup(
    server_url: str,
    location: StorageLocation,
    directory: Path,
    *,
    label: str,
    timeout: float,
    pg_dump: Path | None = None,
) -> Backup:
    """Dump the tenant's schema or database at `location` into a new file
    `directory/{label}.{random}.dump`.

    `server_url` is the storage server's libpq URL with the platform's credentials (any
    database; the dump connects to `location.database`). `timeout` (seconds) bounds the check
    and the dump; `pg_dump` defaults to the pgserver wheel's. Raises `ValueError` for a bad
    label or timeout before anything runs, `StorageNotFound` when the storage is missing,
    `BackupFailed` otherwise."""
    check_label(label)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    started = time.monotonic()
    directory = directory.absolute()
    # Its own name: another attempt of the same backup may be writing beside it.
    final = directory / f"{label}.{secrets.token_hex(4)}{SUFFIX}"
    command = dump_command(server_url, location, pg_dump=pg_dump)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{label}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise BackupFailed(
            f"cannot write a backup into {directory}: {exc}", transient=False
        ) from None
    temp = Path(name)
    sealed = False
    try:
        try:
            async with asyncio.timeout(timeout):
                try:
                    await dump_storage(command, server_url, location, fd)
                finally:
                    os.close(fd)
        except TimeoutError:
            raise BackupFailed(
                f"backup of {_describe(location)} did not finish within {timeout:g}s",
                transient=True,
            ) from None
        try:
            backup = await asyncio.to_thread(_seal, temp, final)
        except OSError as exc:
            raise BackupFailed(f"cannot write {final}: {exc}", transient=False) from None
        sealed = True
    finally:
        if not sealed:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    _log.info(
        "backup of %s written to %s (%d bytes, sha256 %s) in %.1fs",
        _describe(location),
        backup.path,
        backup.size_bytes,
        backup.sha256,
        time.monotonic() - started,
    )
    return backup
