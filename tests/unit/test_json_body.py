"""The JSON body check as a pure rule: where it stops, and that no 64 KiB body makes it slow.
The same cases against the served API are in tests/integration/test_request_limits.py."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable

import pytest

from api.errors import MalformedBody
from api.json_body import MAX_JSON_DEPTH, MAX_JSON_NUMBER, check_json

K64 = 64 * 1024


def stop(body: bytes) -> int:
    with pytest.raises(MalformedBody) as refused:
        check_json(body)
    position = refused.value.extensions["position"]
    assert f"at byte {position}" in refused.value.detail
    return int(position)


def test_the_limits_are_64_levels_and_100_characters() -> None:
    assert (MAX_JSON_DEPTH, MAX_JSON_NUMBER) == (64, 100)
    check_json(b"[" * 64 + b"]" * 64)
    check_json(b"[" + b"9" * 100 + b"]")
    assert stop(b"[" * 65 + b"]" * 65) == 64
    assert stop(b"[" + b"9" * 101 + b"]") == 1
    assert stop(b'{"a": -0.' + b"5" * 98 + b"}") == 6


def test_the_first_stop_in_reading_order_is_named() -> None:
    # A syntax error before the breach, and a breach before a syntax error.
    assert stop(b'{"a" 1, "b": ' + b"[" * 100 + b"}") == 5
    assert stop(b"[" * 100 + b"x") == 64


def test_what_strings_hold_is_not_counted() -> None:
    check_json(b'["' + b"[{" * 1000 + b"9" * 1000 + b'\\"]"]')


def test_bytes_that_are_not_utf8_are_named() -> None:
    assert stop(b'{"a": "ok", "b": "\xff"}') == 18


def cpu_seconds(check: Callable[[], object]) -> float:
    """The best of three runs of `check`, in this thread's CPU time with the collector off: a
    suite on busy cores stretches wall time, and a full collection of a long-lived test
    process's heap is not the check's cost."""
    best = float("inf")
    for _ in range(3):
        gc.disable()
        try:
            started = time.thread_time()
            with contextlib.suppress(MalformedBody):
                check()
            best = min(best, time.thread_time() - started)
        finally:
            gc.enable()
    return best


HOSTILE = {
    "brackets": b"[" * K64,
    "closers": b"]" * K64,
    "escaped-quotes-never-closed": b'"' + b'\\"' * (K64 // 2 - 1),
    "backslashes": b'"' + b"\\" * (K64 - 1),
    "quotes": b'"' * K64,
    "number-characters": b"1e" * (K64 // 2),
    "numbers-at-the-limit": b"[" + (b"1" * 100 + b",") * (K64 // 101 - 1) + b"1]",
    "strings-of-brackets": b"[" + b'"[",' * (K64 // 4 - 1) + b'""]',
    "small-tokens": b"[" + b"[1]," * (K64 // 4 - 1) + b"[]]",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_no_body_under_the_size_limit_is_slow_to_check(name: str) -> None:
    assert cpu_seconds(lambda: check_json(HOSTILE[name])) < 0.25
