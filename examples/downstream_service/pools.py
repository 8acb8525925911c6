"""Connections to tenant storage: one bounded pool per storage database, least recently used
closed first.

Host, port and database come from each call (several storage servers; a database per tenant in
DATABASE mode); user, password and every other connection option from the service's own
`DOWNSTREAM_DATABASE_URL`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from examples.downstream_service.errors import (
    DownstreamError,
    NotConfigured,
    StorageUnavailable,
    TargetMissing,
)
from examples.downstream_service.models import StorageAddress
from examples.downstream_service.repository import database_exists

_log = logging.getLogger(__name__)

# Asked whether a database that refused a connection exists (libpq tools' default too).
MAINTENANCE_DATABASE = "postgres"
_ADDRESS_KEYS = ("host", "hostaddr", "port", "dbname")


def credentials(
    database_url: str, *, application_name: str, connect_timeout: timedelta
) -> dict[str, Any]:
    """Connection arguments of `database_url` without its address: what every storage
    connection shares. Autocommit, so a read is one round trip; writes open a transaction."""
    args: dict[str, Any] = {
        key: value
        for key, value in conninfo_to_dict(database_url).items()
        if key not in _ADDRESS_KEYS
    }
    args.update(
        application_name=application_name,
        connect_timeout=max(1, round(connect_timeout.total_seconds())),
        autocommit=True,
    )
    return args


class StoragePools:
    """A psycopg pool per storage database, at most `max_pools` of them. Thread-safe."""

    def __init__(
        self,
        *,
        database_url: str | None,
        application_name: str,
        connect_timeout: timedelta,
        max_size: int,
        max_pools: int,
        max_idle: timedelta,
    ) -> None:
        self._args = (
            credentials(
                database_url, application_name=application_name, connect_timeout=connect_timeout
            )
            if database_url
            else None
        )
        self._timeout = connect_timeout.total_seconds()
        self._max_size = max_size
        self._max_pools = max_pools
        self._max_idle = max_idle.total_seconds()
        self._pools: OrderedDict[StorageAddress, ConnectionPool[psycopg.Connection[Any]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    @contextmanager
    def connection(self, address: StorageAddress) -> Iterator[psycopg.Connection[Any]]:
        """A connection to `address`, as the service's role; returned to its pool afterwards.

        NotConfigured without DOWNSTREAM_DATABASE_URL; TargetMissing when the database does
        not exist; StorageUnavailable when the server cannot be reached or stays busy.
        """
        args = self._require_args()
        with self._lock:
            pool = self._pools.get(address)
            if pool is not None:
                self._pools.move_to_end(address)
        if pool is not None:
            try:
                conn = pool.getconn(timeout=self._timeout)
            except PoolTimeout:
                raise self._explain_timeout(address, pool) from None
            except PoolClosed:
                pool = None  # closed to make room by another call just now: start afresh
            else:
                if _alive(conn):
                    try:
                        yield conn
                    finally:
                        pool.putconn(conn)
                    return
                # The server ended it (a restart; a move's freeze ends the service's sessions
                # and refuses new ones): the pool would wait its whole timeout for one it may
                # not get. Its others are likely gone too: start afresh, told at once.
                pool.putconn(conn)
                self._forget(address, pool)
        # A pool opens connections in background workers, retries failures for minutes and
        # answers only "timed out": the first connection is made here instead, so a missing
        # database or a refused port is reported at once and never gets a pool.
        with self._connect(address, args) as conn:
            self._add(address, args)
            yield conn

    def close(self) -> None:
        """Close every pool (at shutdown)."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()

    def discard(self, address: StorageAddress) -> None:
        """Close the pool of `address`, if there is one, and forget it (a torn-down tenant
        database, about to be dropped: its idle connections would only stand in the way)."""
        with self._lock:
            pool = self._pools.pop(address, None)
        if pool is not None:
            # Connections in use stay open until they are returned, then close.
            pool.close()

    @property
    def addresses(self) -> list[StorageAddress]:
        """The databases that have a pool, least recently used first."""
        with self._lock:
            return list(self._pools)

    def _require_args(self) -> dict[str, Any]:
        if self._args is None:
            raise NotConfigured("DOWNSTREAM_DATABASE_URL is not set")
        return self._args

    def _add(self, address: StorageAddress, args: dict[str, Any]) -> None:
        with self._lock:
            if address in self._pools:
                return
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                kwargs={
                    **args,
                    "host": address.host,
                    "port": address.port,
                    "dbname": address.database,
                },
                # None at rest: in DATABASE mode most tenants' pools serve one call.
                min_size=0,
                max_size=self._max_size,
                max_idle=self._max_idle,
                timeout=self._timeout,
                name=f"{address.host}:{address.port}/{address.database}",
                num_workers=1,
                open=False,
            )
            pool.open(wait=False)
            self._pools[address] = pool
            evicted = (
                self._pools.popitem(last=False)[1] if len(self._pools) > self._max_pools else None
            )
        if evicted is not None:
            # Connections in use stay open until they are returned.
            evicted.close()

    def _connect(self, address: StorageAddress, args: dict[str, Any]) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                **args, host=address.host, port=address.port, dbname=address.database
            )
        except psycopg.OperationalError as exc:
            raise self._explain_connect_failure(address, args, exc) from exc

    def _forget(
        self, address: StorageAddress, pool: ConnectionPool[psycopg.Connection[Any]]
    ) -> None:
        """Close `pool` and forget it, unless another call replaced it already."""
        with self._lock:
            if self._pools.get(address) is pool:
                del self._pools[address]
        pool.close()

    def _explain_timeout(
        self, address: StorageAddress, pool: ConnectionPool[psycopg.Connection[Any]]
    ) -> DownstreamError:
        # The pool says only that no connection came in time: a direct attempt tells whether
        # the server or database is gone (then the pool goes too) or the pool was just busy.
        try:
            with self._connect(address, self._require_args()):
                pass
        except DownstreamError as error:
            self._forget(address, pool)
            return error
        return StorageUnavailable(
            f"all {self._max_size} connections to {address.database!r} stayed busy for "
            f"{self._timeout:g}s"
        )

    def _explain_connect_failure(
        self, address: StorageAddress, args: dict[str, Any], exc: psycopg.OperationalError
    ) -> DownstreamError:
        # Connection failures carry no SQLSTATE, so ask the server whether the database exists
        # rather than parsing the error message.
        server = f"{address.host}:{address.port}"
        try:
            with psycopg.connect(
                **args, host=address.host, port=address.port, dbname=MAINTENANCE_DATABASE
            ) as conn:
                exists = database_exists(conn, address.database)
        except psycopg.Error as probe:
            _log.warning("PostgreSQL at %s is unreachable: %s", server, probe)
            return StorageUnavailable(f"PostgreSQL at {server} is unreachable")
        if not exists:
            return TargetMissing(f"database {address.database!r} does not exist")
        _log.warning("could not connect to database %r on %s: %s", address.database, server, exc)
        return StorageUnavailable(f"could not connect to database {address.database!r}")


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server still serves `conn` (one empty round trip, as the pool's check)."""
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True
