"""Single-use token ids: a `jti` is accepted once, and remembered until its token expires.

Kept in the service's own database (a table with a unique key on `jti`), so a token replayed
after a restart, or to another replica, is refused as well. Every SQL statement on that table
is here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from examples.downstream_service.errors import NotConfigured, StorageUnavailable

_log = logging.getLogger(__name__)

TABLE = "seen_token_ids"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS seen_token_ids ("
    " jti TEXT PRIMARY KEY,"
    " expires_at TIMESTAMPTZ NOT NULL)",
    "CREATE INDEX IF NOT EXISTS seen_token_ids_expires_at_idx ON seen_token_ids (expires_at)",
)
# A row left over from an expired token does not block the id: only a live one does.
_FIRST_USE = """
INSERT INTO seen_token_ids AS seen (jti, expires_at) VALUES (%s, to_timestamp(%s))
ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
    WHERE seen.expires_at <= to_timestamp(%s)
RETURNING true
"""
_PURGE = "DELETE FROM seen_token_ids WHERE expires_at <= to_timestamp(%s)"


class ExpiringTable:
    """A table of the service's own database whose rows expire (`expires_at`): created on first
    use, its expired rows deleted by the write that comes after each `purge_interval` (one
    indexed DELETE), so it holds about the last interval's and lifetime's rows. Subclasses name
    the table, its DDL and its purge. Thread-safe; blocking."""

    table: str
    create: tuple[str, ...]
    purge: str

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]] | None,
        *,
        timeout: timedelta,
        purge_interval: timedelta,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._timeout = timeout.total_seconds()
        self._purge_interval = purge_interval.total_seconds()
        self._clock = clock
        self._lock = threading.Lock()
        self._table_ready = False
        self._purged_at: float | None = None

    def prepare(self) -> None:
        """Create the table if it is missing (idempotent; concurrent replicas wait in turn)."""
        with self._connection() as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self.table,))
            for statement in self.create:
                conn.execute(statement)
        self._table_ready = True

    def _ready_connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        if not self._table_ready:
            self.prepare()
        return self._connection()

    def _purge_if_due(self, conn: psycopg.Connection[Any], now: float) -> None:
        with self._lock:
            if self._purged_at is not None and now - self._purged_at < self._purge_interval:
                return
            self._purged_at = now
        deleted = conn.execute(self.purge, (now,)).rowcount
        _log.debug("forgot %d expired rows of %s", deleted, self.table)

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return state_connection(self._pool, self._timeout)


class SeenTokenIds(ExpiringTable):
    """The `jti` of every accepted token that could still verify, in the service's database."""

    table = TABLE
    create = _CREATE
    purge = _PURGE

    def first_use(self, jti: str, forget_after: float) -> bool:
        """Record `jti` until `forget_after` (epoch seconds); False if it is already recorded."""
        now = self._clock()
        with self._ready_connection() as conn:
            first = conn.execute(_FIRST_USE, (jti, forget_after, now)).fetchone() is not None
            self._purge_if_due(conn, now)
        return first


@contextmanager
def state_connection(
    pool: ConnectionPool[psycopg.Connection[Any]] | None, timeout: float
) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the service's own database (autocommit); NotConfigured without one,
    StorageUnavailable when it cannot be reached."""
    if pool is None:
        raise NotConfigured("DOWNSTREAM_DATABASE_URL is not set")
    try:
        with pool.connection(timeout=timeout) as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as exc:
        _log.warning("the service's own database is unavailable: %s", exc)
        raise StorageUnavailable("the service's own database is unavailable") from None


def open_state_pool(
    database_url: str | None, *, application_name: str, timeout: timedelta, max_size: int
) -> ConnectionPool[psycopg.Connection[Any]] | None:
    """The pool on the service's own database, opening in the background; None without a URL."""
    if database_url is None:
        return None
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database_url,
        kwargs={
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": max(1, round(timeout.total_seconds())),
        },
        min_size=1,
        max_size=max_size,
        timeout=timeout.total_seconds(),
        check=ConnectionPool.check_connection,
        name=f"{application_name}-state",
        num_workers=1,
        open=False,
    )
    pool.open(wait=False)
    return pool
