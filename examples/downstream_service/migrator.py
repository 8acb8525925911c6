"""Applies this service's plain SQL migrations to one tenant's schema.

A migration is `<id>.sql` in the service's folder, optionally with `<id>.rollback.sql`; a
leading `-- depends: <id> ...` comment names migrations it needs, which must sort before it:
migrations apply in file-name order. Extra folders (`DOWNSTREAM_EXTRA_MIGRATIONS_DIRS`) add
migrations to the built-in set without a code change: merged and ordered by file name like the
built-in ones, each must sort after every built-in migration (so it becomes the tenants' new
version) and no id may appear twice. A call applies every pending migration in one
transaction under a transaction-scoped advisory lock of (service, schema), recording each in
the service's own history table (see `repository`), so a failure leaves nothing half-applied
and a killed holder leaves no lock behind. A tenant already at the newest version costs one
query and takes no lock.

A teardown takes the same lock, so it never runs beside a migration of the tenant: it drops,
in one transaction, every object the service's role owns in the tenant's schema (its
migrations' objects and its history table) and checks that nothing of the role's is left.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from examples.downstream_service.errors import (
    DownstreamError,
    MigrationBusy,
    NothingToTearDown,
    StorageUnavailable,
    TargetMissing,
    TeardownBlocked,
    TeardownFailed,
)
from examples.downstream_service.models import StorageAddress
from examples.downstream_service.pools import StoragePools
from examples.downstream_service.repository import (
    SchemaHistory,
    anything_owned,
    drop_objects,
    owned_objects,
    run_script,
    schema_exists,
    use_schema,
)

_log = logging.getLogger(__name__)

ROLLBACK_SUFFIX = ".rollback.sql"
_DEPENDS = re.compile(r"^--\s*depends:(.*)$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its id (the file name without `.sql`), its SQL and its undo."""

    id: str
    script: str
    rollback_script: str | None
    depends: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """SHA-256 of the script, recorded with it so a later edit can be noticed."""
        return hashlib.sha256(self.script.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """The newest applied migration of this service, and the ones this call applied."""

    version: str
    applied: list[str]


def _depends(script: str) -> tuple[str, ...]:
    names: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break  # headers are the leading comment lines
        match = _DEPENDS.match(stripped)
        if match:
            names.extend(match.group(1).split())
    return tuple(names)


class MigrationSetInvalid(ValueError):
    """The migration folders do not make one ordered set: a clash, an extra migration that
    sorts before a built-in one, a missing dependency, an empty file or no migration at all."""


def _read_folder(directory: Path) -> list[tuple[Path, Migration]]:
    if not directory.is_dir():
        raise FileNotFoundError(f"migrations folder {directory} does not exist")
    found: list[tuple[Path, Migration]] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(ROLLBACK_SUFFIX):
            continue
        script = path.read_text()
        if not script.strip():
            raise MigrationSetInvalid(f"{path.name} is empty")
        undo = path.with_name(path.stem + ROLLBACK_SUFFIX)
        migration = Migration(
            id=path.stem,
            script=script,
            rollback_script=undo.read_text() if undo.exists() else None,
            depends=_depends(script),
        )
        found.append((path, migration))
    return found


def _merge_extras(
    builtin: list[tuple[Path, Migration]], extra_dirs: Sequence[Path]
) -> list[tuple[Path, Migration]]:
    builtin_ids = {migration.id for _, migration in builtin}
    newest = max((path.name for path, _ in builtin), default="")
    seen = {migration.id: path for path, migration in builtin}
    merged = list(builtin)
    for directory in extra_dirs:
        for path, migration in _read_folder(directory):
            if migration.id in seen:
                kind = "built-in" if migration.id in builtin_ids else "extra"
                raise MigrationSetInvalid(
                    f"extra migration {path} clashes with the {kind} migration "
                    f"{seen[migration.id]}: migration ids must be unique, so rename it"
                )
            if path.name < newest:
                raise MigrationSetInvalid(
                    f"extra migration {path} sorts before the built-in migration {newest}: "
                    "migrations apply in file-name order and an extra one must come after "
                    f"every built-in one (to become the new version), so rename it to sort "
                    f"after {newest}"
                )
            seen[migration.id] = path
            merged.append((path, migration))
    return merged


def load_migrations(directory: Path, extra_dirs: Sequence[Path] = ()) -> list[Migration]:
    """Every migration in `directory` and in `extra_dirs`, in the order they apply (by file
    name, across folders).

    Raises FileNotFoundError for a missing folder and MigrationSetInvalid when the set is
    broken; an extra folder may be empty, the built-in one may not.
    """
    merged = _merge_extras(_read_folder(directory), extra_dirs)
    merged.sort(key=lambda item: item[0].name)
    migrations: list[Migration] = []
    for path, migration in merged:
        earlier = {m.id for m in migrations}
        missing = [name for name in migration.depends if name not in earlier]
        if missing:
            raise MigrationSetInvalid(
                f"{path.name} depends on {', '.join(missing)}, which is not an earlier migration"
            )
        migrations.append(migration)
    if not migrations:
        raise MigrationSetInvalid(f"no migrations in {directory}")
    return migrations


class Migrator:
    """Applies one service's migrations to tenant schemas, on whichever storage server."""

    def __init__(
        self,
        *,
        service_name: str,
        migrations: list[Migration],
        pools: StoragePools,
        lock_timeout: timedelta,
    ) -> None:
        self._service_name = service_name
        self._migrations = migrations
        self._ids = {migration.id for migration in migrations}
        self._pools = pools
        self._lock_timeout = lock_timeout
        self.history = SchemaHistory(service_name)

    @property
    def migration_ids(self) -> list[str]:
        """This service's migration ids, oldest first."""
        return [migration.id for migration in self._migrations]

    def migrate(self, address: StorageAddress, schema: str) -> MigrationOutcome:
        """Apply the migrations `schema` lacks; safe to repeat and to run concurrently."""
        where = f"{address.database}.{schema}"
        with self._pools.connection(address) as conn, self._errors(where):
            applied = self.history.applied(conn, schema)
            if applied is not None and self._ids <= applied:
                return MigrationOutcome(self._version(applied), [])
            return self._apply_pending(conn, address, schema)

    def rollback(
        self, address: StorageAddress, schema: str, to_version: str | None = None
    ) -> list[str]:
        """Undo this service's migrations newer than `to_version` (all if None), newest first,
        with their rollback files; returns the ids undone. For operators and tests."""
        keep = self.migration_ids.index(to_version) + 1 if to_version else 0
        where = f"{address.database}.{schema}"
        with self._pools.connection(address) as conn, self._errors(where), conn.transaction():
            self._lock(conn, schema, where)
            self.history.ensure(conn, schema)
            applied = self.history.applied(conn, schema) or set()
            undone = [m for m in reversed(self._migrations[keep:]) if m.id in applied]
            use_schema(conn, schema)
            for migration in undone:
                if migration.rollback_script is None:
                    raise ValueError(f"{migration.id} has no rollback file")
                run_script(conn, migration.rollback_script)
                self.history.forget(conn, schema, migration.id)
        return [migration.id for migration in undone]

    def teardown(self, address: StorageAddress, schema: str, *, own_database: bool) -> list[str]:
        """Drop everything this service's role owns in `schema`; the names dropped, sorted.

        NothingToTearDown when the database or schema is gone or holds nothing of the role's;
        TeardownBlocked, with nothing dropped, when another role's object depends on one of
        ours. With `own_database` (DATABASE mode: the tenant's database is about to be
        dropped) the pool of that database is closed afterwards, whatever the outcome.
        """
        where = f"{address.database}.{schema}"
        try:
            with (
                self._pools.connection(address) as conn,
                self._errors(where, ("teardown", "tearing down"), TeardownFailed),
                conn.transaction(),
            ):
                self._lock(conn, schema, where)
                return self._drop_owned(conn, schema, where)
        except TargetMissing as exc:
            raise NothingToTearDown(exc.detail) from exc
        finally:
            if own_database:
                self._pools.discard(address)

    def _drop_owned(self, conn: psycopg.Connection[Any], schema: str, where: str) -> list[str]:
        if not schema_exists(conn, schema):
            raise NothingToTearDown(f"schema {where} does not exist")
        if not anything_owned(conn, schema):
            raise NothingToTearDown(f"{where} holds nothing of {self._service_name}")
        objects = owned_objects(conn, schema)
        try:
            drop_objects(conn, schema, objects)
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise TeardownBlocked(
                f"objects in {where} that {self._service_name} does not own depend on its own; "
                "drop them first"
            ) from exc
        left = anything_owned(conn, schema)
        if left:
            # Raised inside the transaction, so it is rolled back: all or nothing.
            raise TeardownFailed(
                f"objects of {self._service_name} it cannot drop remain in {where}: "
                + ", ".join(left)
            )
        dropped = sorted(item.name for item in objects)
        _log.info("%s tore down %s: dropped %s", self._service_name, where, ", ".join(dropped))
        return dropped

    def _apply_pending(
        self, conn: psycopg.Connection[Any], address: StorageAddress, schema: str
    ) -> MigrationOutcome:
        where = f"{address.database}.{schema}"
        # Deciding what to apply inside the lock is what makes concurrent calls apply each
        # migration once: the second caller waits, then finds nothing left to do.
        with conn.transaction():
            self._lock(conn, schema, where)
            if not schema_exists(conn, schema):
                raise TargetMissing(
                    f"schema {schema!r} does not exist in database {address.database!r}"
                )
            self.history.ensure(conn, schema)
            applied = self.history.applied(conn, schema) or set()
            pending = [m for m in self._migrations if m.id not in applied]
            use_schema(conn, schema)
            for migration in pending:
                run_script(conn, migration.script)
                self.history.record(conn, schema, migration.id, migration.checksum)
        applied_here = [migration.id for migration in pending]
        version = self._version(applied | set(applied_here))
        _log.info(
            "%s migrated %s: version %s, applied %s",
            self._service_name,
            where,
            version,
            applied_here or "nothing",
        )
        return MigrationOutcome(version, applied_here)

    def _lock(self, conn: psycopg.Connection[Any], schema: str, where: str) -> None:
        try:
            self.history.lock(conn, schema, self._lock_timeout)
        except psycopg.errors.LockNotAvailable as exc:
            raise MigrationBusy(
                f"the migration lock of {where} is held by another call; tried for "
                f"{self._lock_timeout.total_seconds():g}s"
            ) from exc

    def _version(self, applied: set[str]) -> str:
        # Newest of *this* service's migrations that the history records.
        return [m for m in self.migration_ids if m in applied][-1]

    @contextmanager
    def _errors(
        self,
        where: str,
        work: tuple[str, str] = ("migration", "migrating"),
        failure: type[DownstreamError] = DownstreamError,
    ) -> Iterator[None]:
        """Driver errors inside a migration (or the `work` named), as the service's errors."""
        noun, doing = work
        try:
            yield
        except psycopg.errors.LockNotAvailable as exc:
            raise MigrationBusy(
                f"a {noun} of {where} waited more than "
                f"{self._lock_timeout.total_seconds():g}s for a table lock"
            ) from exc
        except psycopg.OperationalError as exc:
            _log.warning("lost PostgreSQL while %s %s: %s", doing, where, exc)
            raise StorageUnavailable(f"lost the connection to PostgreSQL while {doing}") from exc
        except psycopg.Error as exc:
            _log.exception("%s %s failed", doing, where)
            raise failure(f"{noun} failed with SQLSTATE {exc.sqlstate or 'unknown'}") from exc
