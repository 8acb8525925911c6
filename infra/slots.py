"""One pool of call slots per downstream service and worker process, shared by the service's
task-queue worker and the local attempts made inside workflow tasks.

The service's worker gets its activity slots from the pool (as the SDK's slot supplier: it
polls its queue only while a slot is free), and a local attempt takes a slot within
`LOCAL_SLOT_WAIT` or declines, so the two together never call a service more than `limit`
times at once from this process, and a call that finds no slot soon waits in the task queue,
not inside its attempt.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from datetime import timedelta

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

# How long a local attempt waits for a slot before it declines (the call then waits in its
# task queue instead): short next to the attempt's own margin over the call's timeout, and
# long enough to ride out a burst, where the queue would cost a task round trip per call.
LOCAL_SLOT_WAIT = timedelta(seconds=2)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SharedSlots(CustomSlotSupplier):
    """At most `limit` holders at once. The SDK may release a slot from a thread other than
    the event loop's, so the count is guarded by a lock and waiters are woken on their loop."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def used(self) -> int:
        """Slots held now."""
        return self._used

    def try_take(self) -> bool:
        """Take a slot if one is free now."""
        with self._lock:
            if self._used < self.limit:
                self._used += 1
                return True
            return False

    async def take_within(self, wait: timedelta) -> bool:
        """Take a slot, waiting at most `wait` for one; False when none freed in time."""
        if self.try_take():
            return True
        try:
            async with asyncio.timeout(wait.total_seconds()):
                await self.take()
        except TimeoutError:
            return False
        return True

    async def take(self) -> None:
        """Wait for a slot and take it."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._used < self.limit:
                    self._used += 1
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    try:
                        self._waiters.remove((loop, waiter))
                    except ValueError:
                        # Already woken for a freed slot: pass the wake-up on.
                        self._wake_next()
                raise

    def give(self) -> None:
        """Give a slot back and wake the longest waiter."""
        with self._lock:
            self._used -= 1
            self._wake_next()

    def _wake_next(self) -> None:
        # Called with the lock held. The woken waiter takes the slot only if it is still free
        # when it runs (a local attempt may take it first; the waiter then waits again).
        while self._waiters:
            loop, waiter = self._waiters.popleft()
            if not waiter.done():
                loop.call_soon_threadsafe(_wake, waiter)
                return

    # The SDK's slot supplier: the service's worker polls only while it holds a slot.
    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        """Block until a slot is free (the worker then polls its queue)."""
        await self.take()
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        """A slot for an eager task, if one is free now."""
        return SlotPermit() if self.try_take() else None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        """Nothing to do: a slot counts from its reservation."""

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        """The task is done, or the poll that reserved the slot ended empty."""
        self.give()
