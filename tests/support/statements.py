"""Counting the SQL statements a piece of code sends: a pool whose cursors count each
`execute`, so a test can say "one query per page" without a server-side extension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool


class StatementCounter:
    """How many statements the pool's connections have executed since the last `reset`."""

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> None:
        """Start counting from zero."""
        self.count = 0


def _counting_cursor(counter: StatementCounter) -> type[AsyncCursor[Any]]:
    class CountingCursor(AsyncCursor[Any]):
        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return await super().execute(*args, **kwargs)

        async def executemany(self, *args: Any, **kwargs: Any) -> None:
            counter.count += 1
            await super().executemany(*args, **kwargs)

    return CountingCursor


@asynccontextmanager
async def counting_pool(
    url: str,
) -> AsyncIterator[tuple[AsyncConnectionPool[Any], StatementCounter]]:
    """A pool of `url` whose every statement (conn.execute or cursor.execute) is counted."""
    counter = StatementCounter()
    async with AsyncConnectionPool(
        url, min_size=1, max_size=2, kwargs={"cursor_factory": _counting_cursor(counter)}
    ) as pool:
        yield pool, counter
