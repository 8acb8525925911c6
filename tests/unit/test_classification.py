"""What a downstream service's answer means, and how failures are summarized for `lastError`."""

from __future__ import annotations

import httpx
import pytest

from activities.migrations import Outcome, _reason, classify_status
from tenancy.failures import FailureType, summarize


@pytest.mark.parametrize(
    ("status_code", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (201, Outcome.SUCCESS),
        (202, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (408, Outcome.RETRYABLE),
        (429, Outcome.RETRYABLE),
        (500, Outcome.RETRYABLE),
        (502, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (504, Outcome.RETRYABLE),
        (599, Outcome.RETRYABLE),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (403, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (409, Outcome.REJECTED),
        (410, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (499, Outcome.REJECTED),
        (301, Outcome.REJECTED),
        (304, Outcome.REJECTED),
        (100, Outcome.REJECTED),
    ],
)
def test_classify_status(status_code: int, outcome: Outcome) -> None:
    assert classify_status(status_code) is outcome


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(503, json={"detail": "database is down"}), "HTTP 503: database is down"),
        (httpx.Response(400, json={"message": "bad jdbcUrl"}), "HTTP 400: bad jdbcUrl"),
        (httpx.Response(409, json={"error": "schema missing"}), "HTTP 409: schema missing"),
        (
            httpx.Response(422, json={"detail": "first", "message": "second"}),
            "HTTP 422: first",
        ),
        (httpx.Response(500, json={"code": 7}), "HTTP 500: {'code': 7}"),
        (httpx.Response(500, json=["a", "b"]), "HTTP 500: ['a', 'b']"),
        (
            httpx.Response(502, text="  Bad gateway\n  upstream reset\t\r\n"),
            "HTTP 502: Bad gateway upstream reset",
        ),
        (httpx.Response(503, json={"detail": "line one\nline two"}), "HTTP 503: line one line two"),
        (httpx.Response(500), "HTTP 500"),
        (httpx.Response(504, text=""), "HTTP 504"),
    ],
)
def test_reason_is_one_trimmed_line(response: httpx.Response, reason: str) -> None:
    assert _reason(response) == reason


def test_reason_of_a_huge_body_is_cut() -> None:
    text = _reason(httpx.Response(502, text="<html>" + "x" * 5000 + "</html>"))

    assert text.startswith("HTTP 502: <html>xxx")
    assert text.endswith("...")
    assert len(text) == 300


def test_reason_survives_undecodable_bytes() -> None:
    response = httpx.Response(500, content=b"\xff\xfe oops", headers={"content-type": "text/plain"})

    text = _reason(response)

    assert text.startswith("HTTP 500: ")
    assert "oops" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("", 300, ""),
        ("plain", 300, "plain"),
        ("  padded \n", 300, "padded"),
        ("a\nb\r\nc\td", 300, "a b c d"),
        ("a  \n\n   b", 300, "a b"),
        ("x" * 300, 300, "x" * 300),
        ("x" * 301, 300, "x" * 297 + "..."),
        ("abcdefghij", 10, "abcdefghij"),
        ("abcdefghijk", 10, "abcdefg..."),
        ("a b c d e f", 8, "a b c..."),
    ],
)
def test_summarize(text: str, limit: int, expected: str) -> None:
    result = summarize(text, limit)

    assert result == expected
    assert len(result) <= limit


def test_summarize_default_limit_is_300() -> None:
    assert len(summarize("word " * 1000)) == 300


def test_failure_types_are_distinct() -> None:
    values = [failure.value for failure in FailureType]

    assert len(values) == len(set(values))
    assert FailureType.MIGRATION_REJECTED.value == "MigrationRejected"
    assert FailureType.MIGRATION_UNAVAILABLE.value == "MigrationUnavailable"
