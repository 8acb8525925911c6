"""What tenant storage really exists on each storage server: the catalogs, read-only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from infra.telemetry.logging import redact
from tenancy.failures import summarize
from tenancy.fleet import StorageServer
from tenancy.naming import STORAGE_PREFIX

# A server that does not answer within this is reported unreachable (the pass goes on).
CONNECT_TIMEOUT = timedelta(seconds=3)
READ_TIMEOUT = timedelta(seconds=30)


@dataclass(frozen=True)
class StorageSnapshot:
    """Names of the `tenant_*` schemas (in the server's storage database) and databases
    (server-wide)."""

    schemas: frozenset[str]
    databases: frozenset[str]


@dataclass(frozen=True)
class FleetInventory:
    """Each reachable server's snapshot, and why each other one could not be read."""

    snapshots: dict[str, StorageSnapshot]
    unreachable: dict[str, str]


async def read_storage(server_url: str, id_prefix: str = "") -> StorageSnapshot:
    """The tenant schemas and databases whose tenant id starts with `id_prefix`.

    One short-lived connection: reconciliation is a rare operator action, and nothing else in
    the API talks to the storage servers, so it keeps no pool for them.
    """
    name_prefix = STORAGE_PREFIX + id_prefix
    async with await psycopg.AsyncConnection.connect(
        server_url,
        autocommit=True,
        connect_timeout=int(CONNECT_TIMEOUT.total_seconds()),
        application_name="platform-reconciliation",
    ) as conn:
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (name_prefix,)
        )
        schemas = frozenset(str(row[0]) for row in await cur.fetchall())
        cur = await conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (name_prefix,)
        )
        databases = frozenset(str(row[0]) for row in await cur.fetchall())
    return StorageSnapshot(schemas=schemas, databases=databases)


async def _read_or_why(server: StorageServer, id_prefix: str) -> StorageSnapshot | str:
    try:
        async with asyncio.timeout(READ_TIMEOUT.total_seconds()):
            return await read_storage(server.dsn, id_prefix)
    except TimeoutError:
        return f"no answer within {READ_TIMEOUT.total_seconds():g} s"
    except (OSError, psycopg.Error) as exc:
        # Whatever kept the catalog from being read: nothing is concluded about the server.
        return summarize(redact(str(exc) or type(exc).__name__))


async def read_fleet(servers: Sequence[StorageServer], id_prefix: str = "") -> FleetInventory:
    """Every server's snapshot at once; a server that cannot be read is named with why."""
    outcomes = await asyncio.gather(*(_read_or_why(s, id_prefix) for s in servers))
    snapshots: dict[str, StorageSnapshot] = {}
    unreachable: dict[str, str] = {}
    for server, outcome in zip(servers, outcomes, strict=True):
        if isinstance(outcome, StorageSnapshot):
            snapshots[server.name] = outcome
        else:
            unreachable[server.name] = outcome
    return FleetInventory(snapshots=snapshots, unreachable=unreachable)
