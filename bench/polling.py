"""What the benchmarks' watchers share: a query loop in a task of its own while entered (it
reads the database's clock and rows beside the work being measured)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Self

from infra.background import in_background


class Polling:
    """Runs `_poll` in the background while the `async with` lasts; cancelled on exit."""

    _stack: AsyncExitStack

    async def __aenter__(self) -> Self:
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(in_background(self._poll(), type(self).__name__))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def _poll(self) -> None:
        """Look, wait, look again, until cancelled."""
        raise NotImplementedError
