"""DDL on the tenant storage server: one schema or one database per tenant, created idempotently."""

from __future__ import annotations

import contextlib
from typing import Any

from psycopg import errors, sql
from psycopg_pool import AsyncConnectionPool

from tenancy.models import StorageLocation, StorageMode
from tenancy.naming import storage_location

# Errors that retrying the same DDL with the same credentials cannot fix.
PERMANENT_STORAGE_ERRORS: tuple[type[Exception], ...] = (
    errors.InsufficientPrivilege,
    errors.InvalidSchemaName,
    errors.InvalidCatalogName,
)


class StorageAdmin:
    """Creates tenant storage. The pool must hold autocommit connections (CREATE DATABASE)."""

    def __init__(self, pool: AsyncConnectionPool[Any], server_url: str) -> None:
        self._pool = pool
        self._server_url = server_url

    def locate(self, tenant_id: str, mode: StorageMode) -> StorageLocation:
        """Where the tenant's storage is (or will be)."""
        return storage_location(self._server_url, mode, tenant_id)

    async def ensure(self, tenant_id: str, mode: StorageMode) -> StorageLocation:
        """Create the tenant's schema or database unless it exists; safe under races."""
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

    async def _ensure_schema(self, name: str) -> None:
        async with self._pool.connection() as conn:
            # Two concurrent IF NOT EXISTS can both miss the catalog row; one wins, fine.
            with contextlib.suppress(errors.UniqueViolation):
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name))
                )

    async def _ensure_database(self, name: str) -> None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if await cur.fetchone() is not None:
                return
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
