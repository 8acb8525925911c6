"""DDL on the tenant storage server: one schema or one database per tenant, created idempotently,
owned by the platform's role and granted to each downstream service's role.

What a service role gets (and nothing more):

- SCHEMA mode: USAGE and CREATE on `tenant_<id>` in the shared storage database (CONNECT on that
  database is the deployment's grant, made once with the role).
- DATABASE mode: CONNECT on `tenant_<id>` (PUBLIC's is revoked), and USAGE and CREATE on its
  `public` schema (PUBLIC's USAGE and CREATE there are revoked: PostgreSQL grants USAGE, and
  before 15 CREATE; with PUBLIC's USAGE a freeze could not take the schema from a service).

Each service then owns the tables it creates, so another service's role cannot read or alter them.

`grant_storage` makes those grants on an existing storage (`StorageAdmin.ensure` makes them on
creation, a move's unfreeze again on its source), `revoke_storage` takes them away (a move's
freeze).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from tenancy.models import StorageLocation, StorageMode
from tenancy.naming import storage_location

# Advisory-lock namespace of storage creation: two attempts of one tenant's creation (a retry
# while a timed-out attempt still runs) would otherwise race on GRANT, which PostgreSQL answers
# with "tuple concurrently updated".
_LOCK_NAMESPACE = 0x7E4A
# Seconds to wait for a new tenant database to accept the connection that grants on its schema.
_CONNECT_TIMEOUT = 10


class StorageStillPresent(Exception):
    """A drop returned but the schema or database is still there."""


def _grantees(roles: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(role) for role in roles)


async def lock_storage(
    conn: psycopg.AsyncConnection[Any], name: str, *, session: bool = False
) -> None:
    """Serialise, until this transaction ends (or, with `session`, until the connection
    closes), the DDL and grants of one tenant's storage."""
    query = (
        "SELECT pg_advisory_lock(%s, hashtext(%s))"
        if session
        else "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
    )
    await conn.execute(query, (_LOCK_NAMESPACE, name))


@contextlib.asynccontextmanager
async def _transaction_on(
    server_url: str, database: str
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conninfo = make_conninfo(server_url, dbname=database, connect_timeout=_CONNECT_TIMEOUT)
    async with (
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
        conn.transaction(),
    ):
        yield conn


async def _grant_schema(
    conn: psycopg.AsyncConnection[Any], name: str, roles: Sequence[str]
) -> None:
    await lock_storage(conn, name)
    if roles:
        await conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(name), _grantees(roles)
            )
        )


async def _grant_database(
    conn: psycopg.AsyncConnection[Any], name: str, roles: Sequence[str]
) -> None:
    """From any database of the server."""
    database = sql.Identifier(name)
    await lock_storage(conn, name)
    await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
    if roles:
        await conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, _grantees(roles))
        )


async def _grant_public_schema(
    conn: psycopg.AsyncConnection[Any], name: str, roles: Sequence[str]
) -> None:
    """On the tenant database itself: only the service roles may use `public`."""
    await lock_storage(conn, name)
    await conn.execute("REVOKE USAGE, CREATE ON SCHEMA public FROM PUBLIC")
    if roles:
        await conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(_grantees(roles))
        )


async def grant_storage(server_url: str, location: StorageLocation, roles: Sequence[str]) -> None:
    """Grant the existing storage at `location` to `roles` as its creation does (see the
    module's docstring); safe when repeated. `server_url`: the platform's URL of the server."""
    async with _transaction_on(server_url, location.database) as conn:
        if location.mode is StorageMode.SCHEMA:
            await _grant_schema(conn, location.schema_name, roles)
        else:
            await _grant_database(conn, location.database, roles)
            await _grant_public_schema(conn, location.database, roles)


async def revoke_storage(server_url: str, location: StorageLocation, roles: Sequence[str]) -> None:
    """Take from `roles` what `grant_storage` gives them, so that no new statement of theirs
    reads or writes the storage at `location` (their open sessions are the caller's business);
    safe when repeated. DATABASE mode also revokes `public`'s USAGE: a session that passed
    its CONNECT check just before the revoke still reaches nothing."""
    if not roles:
        return
    grantees = _grantees(roles)
    async with _transaction_on(server_url, location.database) as conn:
        if location.mode is StorageMode.SCHEMA:
            await lock_storage(conn, location.schema_name)
            await conn.execute(
                sql.SQL("REVOKE USAGE, CREATE ON SCHEMA {} FROM {}").format(
                    sql.Identifier(location.schema_name), grantees
                )
            )
            return
        await lock_storage(conn, location.database)
        await conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(location.database), grantees
            )
        )
        await conn.execute(
            sql.SQL("REVOKE USAGE, CREATE ON SCHEMA public FROM PUBLIC, {}").format(grantees)
        )


class StorageAdmin:
    """Creates tenant storage and grants it to `service_roles`. The pool must hold autocommit
    connections (CREATE DATABASE) to the storage database at `server_url`."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        server_url: str,
        service_roles: Sequence[str] = (),
    ) -> None:
        self._pool = pool
        self._server_url = server_url
        self._roles = tuple(service_roles)

    def locate(self, tenant_id: str, mode: StorageMode) -> StorageLocation:
        """Where the tenant's storage is (or will be)."""
        return storage_location(self._server_url, mode, tenant_id)

    async def ensure(self, tenant_id: str, mode: StorageMode) -> StorageLocation:
        """Create the tenant's schema or database unless it exists and grant it to the service
        roles; safe under races and when repeated. A missing role raises psycopg's
        `UndefinedObject` (SQLSTATE 42704) before anything is created."""
        location = self.locate(tenant_id, mode)
        if mode is StorageMode.SCHEMA:
            await self._ensure_schema(location.schema_name)
        else:
            await self._ensure_database(location.database)
        return location

    async def exists(self, location: StorageLocation) -> bool:
        """True when the location's schema (SCHEMA) or database (DATABASE) exists."""
        if location.mode is StorageMode.SCHEMA:
            query = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
            name = location.schema_name
        else:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            name = location.database
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, (name,))
            return await cur.fetchone() is not None

    async def _check_roles(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # The cast raises the server's own "role does not exist" (42704), so a missing role
        # stops the step before a database is created that no one could use.
        if self._roles:
            await conn.execute(
                "SELECT role::regrole FROM unnest(%s::text[]) AS role", (list(self._roles),)
            )

    async def _ensure_schema(self, name: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_storage(conn, name)
            await self._check_roles(conn)
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name))
            )
            await _grant_schema(conn, name, self._roles)

    async def _ensure_database(self, name: str) -> None:
        async with self._pool.connection() as conn:
            await self._check_roles(conn)
            cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if await cur.fetchone() is None:
                with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                    await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            # Granted on every run, not only after CREATE: an attempt may have died in between.
            async with conn.transaction():
                await _grant_database(conn, name, self._roles)
        async with _transaction_on(self._server_url, name) as conn:
            await _grant_public_schema(conn, name, self._roles)

    async def drop(self, location: StorageLocation) -> None:
        """Drop the tenant's schema (with everything in it) or database (closing its sessions),
        then check that it is gone; safe when repeated, a no-op when it never existed."""
        if location.mode is StorageMode.SCHEMA:
            schema = sql.Identifier(location.schema_name)
            async with self._pool.connection() as conn, conn.transaction():
                await lock_storage(conn, location.schema_name)
                await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        else:
            database = sql.Identifier(location.database)
            async with self._pool.connection() as conn:
                # FORCE ends the services' sessions on it (pg_signal_backend, see devstack.roles).
                await conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database)
                )
        if await self.exists(location):
            raise StorageStillPresent(f"{location.mode.value.lower()} of the tenant still exists")
