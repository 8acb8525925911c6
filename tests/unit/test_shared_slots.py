"""The call slots a service's queue worker and the local attempts share (infra/slots.py):
never more than the limit held, waiters served as slots come back, from any thread."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from infra.slots import SharedSlots


async def test_never_more_than_the_limit_and_a_slot_comes_back() -> None:
    slots = SharedSlots(2)
    assert slots.try_take()
    assert slots.try_take()
    assert not slots.try_take()
    assert slots.used == 2
    slots.give()
    assert slots.try_take()
    assert slots.used == 2


async def test_a_waiter_takes_the_slot_given_back() -> None:
    slots = SharedSlots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.give()
    await asyncio.wait_for(waiter, timeout=5)
    assert slots.used == 1


async def test_take_within_gives_up_after_the_wait_and_leaves_no_waiter_behind() -> None:
    slots = SharedSlots(1)
    assert slots.try_take()
    assert not await slots.take_within(timedelta(milliseconds=20))
    # The waiter that gave up is gone: the slot given back goes to the next taker.
    slots.give()
    assert slots.used == 0
    assert await slots.take_within(timedelta(milliseconds=20))


async def test_a_wake_up_for_a_waiter_that_gave_up_passes_to_the_next() -> None:
    slots = SharedSlots(1)
    assert slots.try_take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # wakes `first` ...
    first.cancel()  # ... which gives up before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, timeout=5)
    assert slots.used == 1


async def test_a_slot_given_back_from_another_thread_wakes_the_waiter() -> None:
    # The SDK may release a worker's slot from one of its own threads.
    slots = SharedSlots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    releaser = threading.Thread(target=slots.give)
    releaser.start()
    releaser.join()
    await asyncio.wait_for(waiter, timeout=5)
    assert slots.used == 1


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        SharedSlots(0)
