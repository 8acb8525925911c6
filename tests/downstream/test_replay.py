"""The jti store in the service's own database: single use while a token lives, forgotten once
it has expired, and one winner among concurrent uses."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from examples.downstream_service.errors import NotConfigured
from examples.downstream_service.replay import SeenTokenIds, open_state_pool
from tests.downstream.helpers import Storage


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state_pool(storage: Storage) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    """A pool on backend-service's own database, as its role."""
    pool = open_state_pool(
        storage.service_url(),
        application_name="backend-service",
        timeout=timedelta(seconds=5),
        max_size=4,
    )
    assert pool is not None
    yield pool
    pool.close()


def _rows(storage: Storage, prefix: str) -> int:
    with psycopg.connect(storage.service_url()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM seen_token_ids WHERE starts_with(jti, %s)", (prefix,)
        ).fetchone()
    return int(row[0]) if row else 0


def _store(
    pool: ConnectionPool[psycopg.Connection[Any]], clock: Clock, purge: float = 60
) -> SeenTokenIds:
    return SeenTokenIds(
        pool, timeout=timedelta(seconds=5), purge_interval=timedelta(seconds=purge), clock=clock
    )


def test_a_jti_is_accepted_once_while_its_token_lives(
    state_pool: ConnectionPool[psycopg.Connection[Any]],
) -> None:
    clock = Clock()
    seen = _store(state_pool, clock)
    a, b = f"a-{id(clock)}", f"b-{id(clock)}"
    assert seen.first_use(a, forget_after=1_300)
    assert not seen.first_use(a, forget_after=1_300)
    clock.now = 1_299
    assert not seen.first_use(a, forget_after=1_600)
    assert seen.first_use(b, forget_after=1_300)
    clock.now = 1_300  # a's token has expired: its id no longer blocks anything
    assert seen.first_use(a, forget_after=1_900)


def test_expired_ids_are_purged_by_a_later_call(
    state_pool: ConnectionPool[psycopg.Connection[Any]], storage: Storage
) -> None:
    clock = Clock()
    prefix = f"purge-{id(clock)}-"
    seen = _store(state_pool, clock, purge=10)
    for index in range(20):
        assert seen.first_use(f"{prefix}{index}", forget_after=1_000 + 5 + index)
    assert _rows(storage, prefix) == 20
    clock.now = 1_009  # within the purge interval: nothing deleted yet
    seen.first_use(f"{prefix}x", forget_after=5_000)
    assert _rows(storage, prefix) == 21
    clock.now = 1_015  # the interval has passed; the tokens that expired by now go
    seen.first_use(f"{prefix}y", forget_after=5_000)
    assert _rows(storage, prefix) == 22 - 11


def test_concurrent_uses_of_one_jti_let_exactly_one_through(
    state_pool: ConnectionPool[psycopg.Connection[Any]],
) -> None:
    seen = _store(state_pool, Clock())
    jti = f"same-{id(seen)}"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: seen.first_use(jti, 10**10), range(64)))
    assert results.count(True) == 1


def test_without_a_database_every_use_is_503() -> None:
    seen = SeenTokenIds(None, timeout=timedelta(seconds=1), purge_interval=timedelta(0))
    with pytest.raises(NotConfigured):
        seen.first_use("any", 10**10)
