"""The jti store: single use while a token lives, forgotten once it has expired, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from examples.downstream_service.replay import SeenTokenIds


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_jti_is_accepted_once_while_its_token_lives() -> None:
    clock = Clock()
    seen = SeenTokenIds(clock)
    assert seen.first_use("a", forget_after=1_300)
    assert not seen.first_use("a", forget_after=1_300)
    clock.now = 1_299
    assert not seen.first_use("a", forget_after=1_600)
    assert seen.first_use("b", forget_after=1_300)


def test_entries_are_dropped_once_their_tokens_expire() -> None:
    clock = Clock()
    seen = SeenTokenIds(clock)
    for index in range(100):
        assert seen.first_use(f"jti-{index}", forget_after=1_000 + 10 + index)
    assert len(seen) == 100
    clock.now = 1_059.5
    assert len(seen) == 50
    clock.now = 2_000
    assert len(seen) == 0


def test_concurrent_uses_of_one_jti_let_exactly_one_through() -> None:
    seen = SeenTokenIds()
    forget_after = 10**10
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: seen.first_use("same", forget_after), range(200)))
    assert results.count(True) == 1
