"""Applies this service's yoyo migrations into one tenant's database and schema.

yoyo keeps its bookkeeping tables (`_yoyo_migration`, `_yoyo_log`, `yoyo_lock`, ...) in the
target schema, so every tenant has its own history and its own lock. Both reference services
migrate into the same tenant schema and so share those tables: migration ids must be unique
across services, which is why the files carry a service prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from yoyo import exceptions as yoyo_exceptions
from yoyo import read_migrations
from yoyo.backends import PostgresqlPsycopgBackend
from yoyo.connections import DatabaseURI, parse_uri
from yoyo.migrations import MigrationList, default_migration_table, topological_sort

from examples.downstream_service.errors import (
    DownstreamError,
    MigrationBusy,
    NotConfigured,
    StorageUnavailable,
    TargetMissing,
)

_log = logging.getLogger(__name__)

# First half of the advisory lock key: "yoyo" in ASCII, so other advisory locks do not collide.
LOCK_CLASS = 0x796F796F
_SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)"
_DATABASE_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to migrate: a database on the storage server and a schema inside it."""

    database: str
    schema: str


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """The newest applied migration of this service, and the ones this call applied."""

    version: str
    applied: list[str]


def _connect(uri: DatabaseURI) -> psycopg.Connection[Any]:
    params = {key: value for key, value in uri.args.items() if key != "schema"}
    # Autocommit, as yoyo's own backend does: yoyo issues BEGIN/COMMIT itself.
    return psycopg.connect(
        host=uri.hostname,
        port=uri.port,
        user=uri.username,
        password=uri.password,
        dbname=uri.database,
        autocommit=True,
        **params,
    )


class _TenantBackend(PostgresqlPsycopgBackend):  # type: ignore[misc]  # yoyo ships no types
    """yoyo's psycopg 3 backend, with the search_path set through `sql.Identifier`.

    yoyo formats the schema into `SET search_path` with `str.format`; this does not.
    """

    # yoyo re-imports the driver and appends its error class to a global list for every backend
    # instance (one per call and per migration); a class-level driver stops that slow leak.
    _driver = psycopg
    _is_locked: bool = False  # yoyo's flag, declared for the type checker

    def connect(self, dburi: DatabaseURI) -> psycopg.Connection[Any]:
        self.schema = dburi.args.get("schema")
        return _connect(dburi)

    def init_connection(self, connection: psycopg.Connection[Any]) -> None:
        # Called again after every rollback, so the path survives yoyo's own transactions.
        if self.schema:
            connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    @contextmanager
    def lock(self, timeout: float = 10) -> Iterator[None]:
        """The schema's migration lock, as a PostgreSQL advisory lock instead of yoyo's lock row.

        yoyo polls its row every 0.5 s, so the second of two services migrating one tenant
        (they share the schema's bookkeeping) waited half a second for a lock held for a few
        milliseconds; a waiter here wakes as soon as the holder is done. And a process killed
        while holding it releases it with its connection, where yoyo's row stayed behind until
        `yoyo break-lock`. Advisory locks are per database, so the key is the schema name.
        """
        if self._is_locked:  # yoyo takes the lock again inside its own locked sections
            yield
            return
        connection = self.connection
        key = (LOCK_CLASS, self.schema or "public")
        connection.execute(
            "SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(timeout * 1000))}ms",)
        )
        try:
            connection.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        except psycopg.errors.LockNotAvailable as exc:
            raise yoyo_exceptions.LockTimeout(f"migration lock not acquired in {timeout}s") from exc
        finally:
            connection.execute("SELECT set_config('lock_timeout', '0', false)")
        self._is_locked = True
        try:
            yield
        finally:
            self._is_locked = False
            try:
                connection.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
            except psycopg.Error:
                # A lost connection has released it already; keep the original error.
                _log.warning("could not release the migration lock of %s", key[1])


def load_migrations(directory: Path) -> MigrationList:
    """Read and parse every migration in `directory`; fail if there is none or one is broken."""
    if not directory.is_dir():
        raise FileNotFoundError(f"migrations folder {directory} does not exist")
    migrations = read_migrations(str(directory))
    if not migrations:
        raise ValueError(f"no migrations in {directory}")
    # Parsed once here: a broken file fails start-up instead of being skipped at request time,
    # and request threads never race to parse the same migration.
    for migration in [*migrations, *migrations.post_apply]:
        migration.load()
    return MigrationList(topological_sort(migrations), migrations.post_apply)


class Migrator:
    """Applies one service's migrations to tenant targets on one PostgreSQL server."""

    def __init__(
        self,
        *,
        service_name: str,
        database_url: str | None,
        migrations: MigrationList,
        connect_timeout: timedelta,
        lock_timeout: timedelta,
    ) -> None:
        self._service_name = service_name
        self._server = parse_uri(database_url) if database_url else None
        self._migrations = migrations
        self._connect_timeout = max(1, round(connect_timeout.total_seconds()))
        self._lock_timeout = lock_timeout.total_seconds()

    @property
    def migration_ids(self) -> list[str]:
        """This service's migration ids, oldest first."""
        return [migration.id for migration in self._migrations]

    def migrate(self, target: Target) -> MigrationOutcome:
        """Apply the migrations `target` lacks; safe to repeat and to run concurrently."""
        uri = self._target_uri(target)
        try:
            backend = _TenantBackend(uri, default_migration_table)
        except psycopg.OperationalError as exc:
            raise self._explain_connect_failure(target) from exc
        try:
            with backend:
                return self._migrate(backend, target)
        except yoyo_exceptions.LockTimeout as exc:
            raise MigrationBusy(
                f"the migration lock of {target.database}.{target.schema} is held by another "
                f"call; tried for {self._lock_timeout:g}s"
            ) from exc
        except psycopg.OperationalError as exc:
            _log.warning("lost PostgreSQL while migrating %s: %s", target, exc)
            raise StorageUnavailable("lost the connection to PostgreSQL while migrating") from exc
        except psycopg.Error as exc:
            _log.exception("migrating %s failed", target)
            raise DownstreamError(
                f"migration failed with SQLSTATE {exc.sqlstate or 'unknown'}"
            ) from exc

    def _migrate(self, backend: _TenantBackend, target: Target) -> MigrationOutcome:
        if not _exists(backend.connection, _SCHEMA_EXISTS, target.schema):
            raise TargetMissing(
                f"schema {target.schema!r} does not exist in database {target.database!r}"
            )
        backend.init_database()
        # Deciding what to apply inside the lock is what makes concurrent calls apply each
        # migration once: the second caller waits, then finds nothing left to do.
        with backend.lock(self._lock_timeout):
            pending = backend.to_apply(self._migrations)
            backend.apply_migrations(pending)
            applied_hashes = set(backend.get_applied_migration_hashes())
        applied_here = [migration.id for migration in pending]
        # Newest of *this* service's migrations: the log also holds the other services' entries.
        version = [m.id for m in self._migrations if m.hash in applied_hashes][-1]
        _log.info(
            "%s migrated %s: version %s, applied %s",
            self._service_name,
            target,
            version,
            applied_here or "nothing",
        )
        return MigrationOutcome(version=version, applied=applied_here)

    def _target_uri(self, target: Target) -> DatabaseURI:
        if self._server is None:
            raise NotConfigured("DOWNSTREAM_DATABASE_URL is not set")
        args = {**self._connection_args(), "schema": target.schema}
        uri: DatabaseURI = self._server._replace(database=target.database, args=args)
        return uri

    def _connection_args(self) -> dict[str, str]:
        assert self._server is not None
        return {
            **self._server.args,
            "connect_timeout": str(self._connect_timeout),
            "application_name": self._service_name,
        }

    def _explain_connect_failure(self, target: Target) -> DownstreamError:
        # Connection failures carry no SQLSTATE, so ask the server's own database whether the
        # target exists rather than parsing the error message.
        assert self._server is not None
        server = self._server._replace(args=self._connection_args())
        try:
            with _connect(server) as conn:
                database_exists = _exists(conn, _DATABASE_EXISTS, target.database)
        except psycopg.Error as exc:
            _log.warning("PostgreSQL at %s is unreachable: %s", server.hostname, exc)
            return StorageUnavailable(f"PostgreSQL at {server.hostname} is unreachable")
        if not database_exists:
            return TargetMissing(f"database {target.database!r} does not exist")
        _log.warning("could not connect to database %r although it exists", target.database)
        return StorageUnavailable(f"could not connect to database {target.database!r}")


def _exists(conn: psycopg.Connection[Any], query: str, name: str) -> bool:
    row = conn.execute(query, (name,)).fetchone()
    return bool(row and row[0])
