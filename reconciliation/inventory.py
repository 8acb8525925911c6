"""What tenant storage really exists on the storage server: the catalog, read-only."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tenancy.naming import STORAGE_PREFIX


@dataclass(frozen=True)
class StorageSnapshot:
    """Names of the `tenant_*` schemas (in the storage database) and databases (server-wide)."""

    schemas: frozenset[str]
    databases: frozenset[str]


async def read_storage(server_url: str, id_prefix: str = "") -> StorageSnapshot:
    """The tenant schemas and databases whose tenant id starts with `id_prefix`.

    One short-lived connection: reconciliation is a rare operator action, and nothing else in
    the API talks to the storage server, so it keeps no pool for it.
    """
    name_prefix = STORAGE_PREFIX + id_prefix
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (name_prefix,)
        )
        schemas = frozenset(str(row[0]) for row in await cur.fetchall())
        cur = await conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (name_prefix,)
        )
        databases = frozenset(str(row[0]) for row in await cur.fetchall())
    return StorageSnapshot(schemas=schemas, databases=databases)
