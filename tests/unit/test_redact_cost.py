"""Masking costs time linear in the line, whatever it holds (issue 19, point 14).

`redact` runs on every log line, uvicorn's access line with the raw URL included: one line a
caller controls must not be able to stall the process. Each family below is text that made a
backtracking pattern rescan a run of characters from every position of it (a run of letters in
a query string took 3.6 s at 8,000 letters, `passwordpassword...` 7 s at 2,000 characters).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from infra.telemetry.logging import redact

# Linear masking takes about 0.3 microseconds a character; a bound near twenty times that, plus
# room for a loaded machine, still fails a quadratic pattern at the first few thousand.
SECONDS_PER_CHAR = 5e-6
SLACK = 0.05
SIZES = (2_000, 8_000, 32_000, 128_000)


def repeat(unit: str, head: str = "", tail: str = "") -> Callable[[int], str]:
    """`head`, then `unit` repeated to about n characters, then `tail`."""
    return lambda n: head + unit * (n // len(unit)) + tail


FAMILIES: dict[str, Callable[[int], str]] = {
    "letters-in-a-query": repeat("a", "GET /healthz?x=", ' HTTP/1.1" 200'),
    "reason-in-a-delete": repeat("b", "DELETE /api/tenants/acme?reason=", ' HTTP/1.1" 202'),
    "dashed-words": repeat("a-"),
    "dotted-words": repeat("a."),
    "plus-words": repeat("a+"),
    "secret-names": repeat("password"),
    "secret-names-dashed": repeat("token-"),
    "jwt-heads": repeat("eyJ-"),
    "jwt-heads-dotted": repeat("eyJ."),
    "schemes": repeat("a.b://"),
    "userinfo": repeat(":", "a://u"),
    "unterminated-quotes": repeat('password="'),
    "unterminated-value": repeat("x", 'password="'),
    "spaces-before-equals": repeat(" ", "password"),
    "spaces-after-equals": repeat(" ", "password="),
    "bearers": repeat("bearer "),
    "bearer-spaces": repeat(" ", "bearer"),
    "pem-headers": repeat("-----BEGIN PRIVATE KEY-----"),
    "pem-dashes": repeat("-", "-----BEGIN RSA PRIVATE KEY-----"),
    "pem-ends": repeat("-----END ", "-----BEGIN PRIVATE KEY-----"),
    "mixed": repeat("password-eyJ.a://u:p=x"),
}


def masking_time(text: str) -> float:
    """The best of three timings of `redact(text)`, in seconds of this thread's CPU time with
    the collector off (a suite on busy cores stretches wall time, and a full collection of a
    long-lived test process's heap is not the masking's cost)."""
    best = float("inf")
    for _ in range(3):
        gc.disable()
        try:
            started = time.thread_time()
            redact(text)
            best = min(best, time.thread_time() - started)
        finally:
            gc.enable()
    return best


@pytest.mark.parametrize("family", list(FAMILIES))
def test_masking_time_is_linear_in_the_line(family: str) -> None:
    """Each size is masked within a per-character bound, checked from the smallest up so a
    quadratic pattern fails in milliseconds instead of running for minutes; 4x the text
    takes well under the 16x a quadratic pattern would."""
    timings: dict[int, float] = {}
    for size in SIZES:
        timings[size] = masking_time(FAMILIES[family](size))
        bound = size * SECONDS_PER_CHAR + SLACK
        assert timings[size] < bound, (
            f"{family}: {size} characters took {timings[size] * 1000:.0f} ms "
            f"(bound {bound * 1000:.0f} ms); timings so far {timings}"
        )
    largest, smaller = SIZES[-1], SIZES[-2]
    assert timings[largest] < 8 * timings[smaller] + 0.01, timings


def test_a_megabyte_access_line_is_masked_quickly() -> None:
    line = "GET /healthz?x=" + "a" * 1024 * 1024 + ' HTTP/1.1" 200'

    assert masking_time(line) < 1.0
    assert redact(line) == line


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Where the pattern starts inside a run: the mask still lands on the value.
        ("x-token-y=abc", "x-token-y=***"),
        ("foo=password=hunter2", "foo=password=***"),
        ("a-eyJx.eyJy.z end", "a-*** end"),
        ("git+ssh://u:hunter2@host/repo", "git+ssh://u:***@host/repo"),
        ("1a.b://u:hunter2@h", "1a.b://u:***@h"),
        ("eyJ-a.b eyJx.eyJy.z", "eyJ-a.b ***"),
        ("passwordpassword-x = 'hunter2'", "passwordpassword-x = ***"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ***"),
        ('{"apiKey": "hunter2"}', '{"apiKey": ***}'),
    ],
)
def test_masking_finds_secrets_wherever_the_run_starts(raw: str, expected: str) -> None:
    assert redact(raw) == expected
