"""DDL on the tenant storage server: one schema or one database per tenant, created idempotently,
owned by the platform's role and granted to each downstream service's role.

What a service role gets (and nothing more):

- SCHEMA mode: USAGE and CREATE on `tenant_<id>` in the shared storage database (CONNECT on that
  database is the deployment's grant, made once with the role).
- DATABASE mode: CONNECT on `tenant_<id>` (PUBLIC's is revoked), and USAGE and CREATE on its
  `public` schema (PUBLIC's CREATE there is revoked: PostgreSQL before 15 grants it).

Each service then owns the tables it creates, so another service's role cannot read or alter them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
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

    def _grantees(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(role) for role in self._roles)

    async def _check_roles(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # The cast raises the server's own "role does not exist" (42704), so a missing role
        # stops the step before a database is created that no one could use.
        if self._roles:
            await conn.execute(
                "SELECT role::regrole FROM unnest(%s::text[]) AS role", (list(self._roles),)
            )

    async def _lock(self, conn: psycopg.AsyncConnection[Any], name: str) -> None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, name)
        )

    async def _ensure_schema(self, name: str) -> None:
        schema = sql.Identifier(name)
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock(conn, name)
            await self._check_roles(conn)
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            if self._roles:
                await conn.execute(
                    sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                        schema, self._grantees()
                    )
                )

    async def _ensure_database(self, name: str) -> None:
        database = sql.Identifier(name)
        async with self._pool.connection() as conn:
            await self._check_roles(conn)
            cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if await cur.fetchone() is None:
                with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                    await conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
            # Granted on every run, not only after CREATE: an attempt may have died in between.
            async with conn.transaction():
                await self._lock(conn, name)
                await conn.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database)
                )
                if self._roles:
                    await conn.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                            database, self._grantees()
                        )
                    )
        await self._grant_public_schema(name)

    async def _grant_public_schema(self, name: str) -> None:
        """On the new database itself: only the service roles may create in `public`."""
        conninfo = make_conninfo(self._server_url, dbname=name, connect_timeout=_CONNECT_TIMEOUT)
        async with (
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
            conn.transaction(),
        ):
            await self._lock(conn, name)
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            if self._roles:
                await conn.execute(
                    sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(self._grantees())
                )

    async def drop(self, location: StorageLocation) -> None:
        """Drop the tenant's schema (with everything in it) or database (closing its sessions),
        then check that it is gone; safe when repeated, a no-op when it never existed."""
        if location.mode is StorageMode.SCHEMA:
            schema = sql.Identifier(location.schema_name)
            async with self._pool.connection() as conn, conn.transaction():
                await self._lock(conn, location.schema_name)
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
