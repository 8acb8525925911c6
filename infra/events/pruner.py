"""Bounded event stores: the worker deletes published lifecycle events (`event_outbox`) and
settled commands (`downstream_commands`) once they are older than `PLATFORM_EVENTS_RETENTION`.

Rows go in batches of `PRUNE_BATCH`, each its own short transaction that skips rows another
transaction holds, so pruning never holds a long lock nor waits behind a writer, and every
worker may prune at once (they share the rows out). Unpublished events and commands that wait
for a reply are never pruned: the relay and the reply listener still need them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from infra.background import in_background
from infra.db.commands import CommandRepository
from infra.db.outbox import prune_published

PRUNE_BATCH = 500
# A worker prunes when it starts and then this often.
PRUNE_INTERVAL = timedelta(minutes=10)
_log = structlog.stdlib.get_logger("platform.events")


@dataclass(frozen=True)
class Pruned:
    """How many rows one pruning round deleted."""

    events: int
    commands: int


async def _in_batches(delete: Callable[[], Awaitable[int]], batch_size: int) -> int:
    total = 0
    while True:
        deleted = await delete()
        total += deleted
        if deleted < batch_size:
            return total


async def prune_event_stores(
    pool: AsyncConnectionPool[Any], *, retention: timedelta, batch_size: int = PRUNE_BATCH
) -> Pruned:
    """Delete what is past `retention` in both stores, batch after batch, until a batch
    comes back short."""
    commands = CommandRepository(pool)
    return Pruned(
        events=await _in_batches(lambda: prune_published(pool, retention, batch_size), batch_size),
        commands=await _in_batches(
            lambda: commands.prune_settled(retention, batch_size), batch_size
        ),
    )


async def _prune_periodically(
    pool: AsyncConnectionPool[Any], retention: timedelta, interval: timedelta
) -> None:
    while True:
        try:
            pruned = await prune_event_stores(pool, retention=retention)
            if pruned.events or pruned.commands:
                _log.info(
                    "pruned event stores",
                    events=pruned.events,
                    commands=pruned.commands,
                    retention_seconds=retention.total_seconds(),
                )
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            # The database being away is waited out; the next round catches up.
            _log.warning("pruning event stores failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval.total_seconds())


@asynccontextmanager
async def running_pruner(
    pool: AsyncConnectionPool[Any],
    retention: timedelta,
    *,
    interval: timedelta = PRUNE_INTERVAL,
) -> AsyncIterator[None]:
    """Prune now and every `interval` while the context is open."""
    async with in_background(_prune_periodically(pool, retention, interval), "pruner"):
        yield
