"""Caps on concurrent storage creations per PostgreSQL server (OWASP API4: every request
creates storage).

Each worker process holds one `ServerLimits` for storage creations, keyed by the storage
server's name, so a burst of provisionings queues instead of opening more
connections than the server takes. The cap is per worker process: N workers allow N times
the cap. (Migration calls are capped differently: by the worker slots of each service's own
task queue, see `worker.build_worker`, so their wait happens in Temporal, outside any
attempt.)

A slot is waited for inside the activity, and that wait counts against the attempt's
start-to-close timeout. So the wait is bounded by what the attempt can spare (`budget`); when
the wait would eat into the time the work itself needs, the attempt gives up with a retryable
failure, and the retry policy's backoff spreads the load (storage creation retries without
an attempt limit, so throttling never fails a tenant). The worker also caps its
concurrently running activities (see `worker.build_worker`), so most of a burst waits in
Temporal's task queue, where no timeout runs, rather than in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from temporalio import activity


class NoSlot(Exception):
    """No slot became free within the wait budget."""


def remaining_budget(reserve: timedelta) -> timedelta | None:
    """How long the current activity attempt may wait and still keep `reserve` for its work
    before its start-to-close timeout; None when the attempt has no such timeout."""
    info = activity.info()
    if info.start_to_close_timeout is None:
        return None
    deadline = info.started_time + info.start_to_close_timeout
    return max(deadline - datetime.now(UTC) - reserve, timedelta(0))


class ServerLimits:
    """At most `limit` holders of a slot per server key at once, in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, server: str, budget: timedelta | None) -> AsyncIterator[None]:
        """Hold one of `server`'s slots; raise `NoSlot` if none frees within `budget`."""
        semaphore = self._semaphores.setdefault(server, asyncio.Semaphore(self.limit))
        try:
            async with asyncio.timeout(None if budget is None else budget.total_seconds()):
                await semaphore.acquire()
        except TimeoutError:
            raise NoSlot(
                f"no free slot on {server} within {budget} ({self.limit} in use)"
            ) from None
        try:
            yield
        finally:
            semaphore.release()
