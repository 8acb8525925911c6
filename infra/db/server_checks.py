"""The storage servers as the platform's processes find them at start and then periodically.

At start (`refuse_missing_servers`, the API and the worker): a configuration that lacks a server
tenants live on is refused, naming the server and its tenant count, before anything is placed or
dropped on the strength of a list that forgot it. It only reads: a server's row is written when
it is first placed on, cordoned or checked (a start-up that waited on a row lock could hang).

Periodically (`checking_servers`, the worker): each server is asked its version over a fresh
connection with a short timeout. The outcome is written on its row (what
`GET /api/storage-servers` shows as `reachable`, `checkedAt`, `serverVersion`: a request never
waits on a server) and exported as gauges:

    platform_storage_server_up        gauge  server         (1 answered, 0 did not)
    platform_storage_server_tenants   gauge  server, pool   (every status but DELETED)
    platform_storage_server_capacity  gauge  server, pool   (its maxTenants)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
from temporalio.common import MetricMeter

from infra.background import in_background, repeat
from infra.db.servers import ServerRepository
from tenancy.failures import summarize
from tenancy.fleet import StorageServer

SERVER_UP = "platform_storage_server_up"
SERVER_TENANTS = "platform_storage_server_tenants"
SERVER_CAPACITY = "platform_storage_server_capacity"
# A check that takes longer than this says "unreachable".
CHECK_TIMEOUT = timedelta(seconds=3)
_log = logging.getLogger(__name__)


class FleetMismatch(RuntimeError):
    """The configured storage servers lack one that tenants live on."""


async def refuse_missing_servers(
    servers: Sequence[StorageServer], repository: ServerRepository
) -> None:
    """Raise `FleetMismatch` when tenants live on a server that `servers` lacks."""
    stranded = await repository.stranded([s.name for s in servers])
    if stranded:
        held = ", ".join(f"{name!r} ({count} tenants)" for name, count in stranded.items())
        raise FleetMismatch(
            f"PLATFORM_STORAGE_SERVERS lacks storage server {held}: tenants' storage is there. "
            "Add it back to the list (it may be cordoned), or move its tenants first"
        )


async def check_server(server: StorageServer) -> tuple[str | None, str | None]:
    """(version, None) when the server answers within `CHECK_TIMEOUT`, else (None, why)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT.total_seconds()):
            conn = await psycopg.AsyncConnection.connect(
                server.dsn,
                connect_timeout=max(1, int(CHECK_TIMEOUT.total_seconds())),
                autocommit=True,
                application_name="platform-server-check",
            )
            async with conn:
                cur = await conn.execute("SHOW server_version")
                row = await cur.fetchone()
                return (str(row[0]) if row else "unknown"), None
    except TimeoutError:
        return None, f"no answer within {CHECK_TIMEOUT.total_seconds():g} s"
    except Exception as exc:
        return None, summarize(str(exc) or type(exc).__name__)


async def check_servers(
    servers: Sequence[StorageServer], repository: ServerRepository, meter: MetricMeter
) -> None:
    """Check every server at once, record each outcome and refresh the gauges."""
    outcomes = await asyncio.gather(*(check_server(s) for s in servers))
    up = meter.create_gauge(SERVER_UP, "1 when the storage server answered its last check")
    for server, (version, error) in zip(servers, outcomes, strict=True):
        if error is not None:
            _log.warning("storage server %s is unreachable: %s", server.name, error)
        await repository.record_check(
            server.name, reachable=error is None, version=version, error=error
        )
        up.set(1 if error is None else 0, {"server": server.name})
    records = await repository.records([s.name for s in servers])
    tenants = meter.create_gauge(SERVER_TENANTS, "Tenants on the storage server (not DELETED)")
    capacity = meter.create_gauge(SERVER_CAPACITY, "The storage server's maxTenants")
    for server in servers:
        labels = {"server": server.name, "pool": server.pool}
        tenants.set(records[server.name].tenants, labels)
        capacity.set(server.max_tenants, labels)


@asynccontextmanager
async def checking_servers(
    servers: Sequence[StorageServer],
    repository: ServerRepository,
    meter: MetricMeter,
    interval: timedelta,
) -> AsyncIterator[None]:
    """Check the servers now and every `interval` while the context is open (a round that
    cannot record its checks, the metadata database away, is logged; the next one comes)."""
    checking = repeat(
        lambda: check_servers(servers, repository, meter),
        interval,
        "record the storage servers' checks",
    )
    async with in_background(checking, "storage-server-checks"):
        yield
