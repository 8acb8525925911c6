"""Single-use token ids: a `jti` is accepted once, and remembered until its token expires."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable


class SeenTokenIds:
    """The `jti` of every accepted token that could still verify, in this process's memory.

    An entry is dropped once its token's expiry (plus leeway) has passed: from then on the token
    fails the `exp` check anyway, so the store never grows beyond the tokens still alive.

    In memory means per process: with several replicas a token replayed to another replica
    would pass, so a scaled-out service needs a shared store (e.g. Redis `SET jti 1 NX EXAT exp`
    or a table with a unique key on `jti`).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []

    def first_use(self, jti: str, forget_after: float) -> bool:
        """Record `jti` until `forget_after` (epoch seconds); False if it is already recorded."""
        with self._lock:
            self._forget_expired(self._clock())
            if jti in self._expiry:
                return False
            self._expiry[jti] = forget_after
            heapq.heappush(self._by_expiry, (forget_after, jti))
            return True

    def __len__(self) -> int:
        with self._lock:
            self._forget_expired(self._clock())
            return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, jti = heapq.heappop(self._by_expiry)
            del self._expiry[jti]
