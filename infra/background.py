"""Work that runs beside a process's main job for as long as a context is open: a loop that
refreshes something every interval, a consumer, a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

_log = logging.getLogger(__name__)


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[None]:
    """Run `work` in a task named `name` while the context is open; on exit, cancel it and
    wait until it has stopped."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def repeat(step: Callable[[], Awaitable[None]], interval: timedelta, what: str) -> None:
    """Run `step` now and then every `interval`, forever. A failed round is logged and the
    next one comes: a database that is away must not stop the process (what the round
    refreshes keeps its last value meanwhile)."""
    while True:
        try:
            await step()
        except Exception as exc:
            _log.warning("could not %s: %s", what, exc)
        await asyncio.sleep(interval.total_seconds())
