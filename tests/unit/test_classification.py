"""What a downstream service's answer means, what a database error means for a retry, and
how failures are summarized for `lastError`."""

from __future__ import annotations

from datetime import timedelta

import httpx
import psycopg
import psycopg_pool
import pytest
from temporalio.exceptions import ApplicationError

from activities.downstream import Outcome, classify_status
from activities.downstream import answer_reason as _reason
from activities.migrations import _bookkeeping
from infra.db.errors import ErrorKind, classify, classify_sqlstate, sqlstate
from tenancy.contracts import MigrationRetry
from tenancy.failures import FailureType, summarize
from tenancy.naming import migration_task_queue
from workflows.provision.options import CREATE_STORAGE, migrate_service_options


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


# One case (or more) per SQLSTATE class the storage and bookkeeping paths meet.
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        # 08: connection exception.
        ("08000", ErrorKind.TRANSIENT),
        ("08001", ErrorKind.TRANSIENT),
        ("08006", ErrorKind.TRANSIENT),
        # 53: insufficient resources.
        ("53300", ErrorKind.TRANSIENT),
        ("53100", ErrorKind.TRANSIENT),
        ("53200", ErrorKind.TRANSIENT),
        # 57: operator intervention, only the conditions that pass.
        ("57P01", ErrorKind.TRANSIENT),
        ("57P02", ErrorKind.TRANSIENT),
        ("57P03", ErrorKind.TRANSIENT),
        ("57014", ErrorKind.TRANSIENT),
        ("57P04", ErrorKind.PERMANENT),
        # 55: object not in prerequisite state: a lock or a busy template passes.
        ("55P03", ErrorKind.TRANSIENT),
        ("55006", ErrorKind.TRANSIENT),
        ("55000", ErrorKind.PERMANENT),
        # 40: transaction rollback: races pass.
        ("40001", ErrorKind.TRANSIENT),
        ("40P01", ErrorKind.TRANSIENT),
        ("40002", ErrorKind.PERMANENT),
        # 58: system error (I/O).
        ("58000", ErrorKind.TRANSIENT),
        ("58030", ErrorKind.TRANSIENT),
        # 42: syntax error or access rule violation.
        ("42501", ErrorKind.PERMANENT),
        ("42601", ErrorKind.PERMANENT),
        ("42704", ErrorKind.PERMANENT),
        ("42P07", ErrorKind.PERMANENT),
        # 3F, 3D: invalid schema or catalog name.
        ("3F000", ErrorKind.PERMANENT),
        ("3D000", ErrorKind.PERMANENT),
        # 22: data exception.
        ("22001", ErrorKind.PERMANENT),
        ("22021", ErrorKind.PERMANENT),
        # 23: integrity constraint violation.
        ("23505", ErrorKind.PERMANENT),
        # 0A: feature not supported.
        ("0A000", ErrorKind.PERMANENT),
        # XX: internal error.
        ("XX000", ErrorKind.PERMANENT),
        ("XX001", ErrorKind.PERMANENT),
        # Classes no rule names.
        ("25P02", ErrorKind.PERMANENT),
        ("P0001", ErrorKind.PERMANENT),
        ("HV000", ErrorKind.PERMANENT),
    ],
)
def test_classify_by_sqlstate(code: str, kind: ErrorKind) -> None:
    error = psycopg.errors.lookup(code)("from the server")

    assert sqlstate(error) == code
    assert classify_sqlstate(code) is kind
    assert classify(error) is kind


def test_an_unknown_sqlstate_is_permanent() -> None:
    class FromTheFuture(psycopg.OperationalError):
        sqlstate = "9Z999"

    assert classify(FromTheFuture("new condition")) is ErrorKind.PERMANENT


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        # Connection refused or reset: no SQLSTATE, the server never answered.
        (psycopg.OperationalError("connection failed: Connection refused"), ErrorKind.TRANSIENT),
        (psycopg.InterfaceError("the connection is closed"), ErrorKind.TRANSIENT),
        (psycopg_pool.PoolTimeout("couldn't get a connection after 10 sec"), ErrorKind.TRANSIENT),
        (psycopg_pool.TooManyRequests("the pool has too many waiting"), ErrorKind.TRANSIENT),
        (ConnectionResetError("reset by peer"), ErrorKind.TRANSIENT),
        (TimeoutError(), ErrorKind.TRANSIENT),
        # Refused by the driver before sending: the same statement fails the same way.
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL"), ErrorKind.PERMANENT),
        (psycopg.ProgrammingError("wrong number of parameters"), ErrorKind.PERMANENT),
        (ValueError("a bug"), ErrorKind.PERMANENT),
    ],
)
def test_classify_errors_without_sqlstate(error: BaseException, kind: ErrorKind) -> None:
    assert sqlstate(error) is None
    assert classify(error) is kind


def test_storage_creation_has_no_clock_that_counts_queue_time() -> None:
    assert CREATE_STORAGE.schedule_to_close is None
    assert CREATE_STORAGE.heartbeat is not None
    assert CREATE_STORAGE.retry.maximum_attempts == 0
    assert CREATE_STORAGE.retry.maximum_interval == timedelta(seconds=30)


def test_migration_calls_leave_counting_to_the_activity() -> None:
    retry = MigrationRetry(
        max_attempts=3,
        initial_interval=timedelta(seconds=1),
        max_interval=timedelta(seconds=30),
        timeout=timedelta(seconds=60),
    )

    opts = migrate_service_options(retry, migration_task_queue("platform-tenants", "auth"))

    assert opts.retry.maximum_attempts == 0
    assert FailureType.MIGRATION_EXHAUSTED in (opts.retry.non_retryable_error_types or [])
    assert opts.task_queue == "platform-tenants.migrate.auth"
    assert opts.start_to_close == timedelta(seconds=70)
    assert migrate_service_options(retry).task_queue is None


async def _raise(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize(
    ("error", "failure", "non_retryable"),
    [
        (psycopg.OperationalError("connection refused"), FailureType.METADATA_UNAVAILABLE, False),
        (psycopg_pool.PoolTimeout("no connection"), FailureType.METADATA_UNAVAILABLE, False),
        (
            psycopg.errors.lookup("57014")("statement timeout"),
            FailureType.METADATA_UNAVAILABLE,
            False,
        ),
        (psycopg.DataError("cannot contain NUL"), FailureType.METADATA_REJECTED, True),
        (psycopg.errors.lookup("42703")("no such column"), FailureType.METADATA_REJECTED, True),
    ],
)
async def test_a_bookkeeping_failure_never_counts_as_a_service_failure(
    error: BaseException, failure: FailureType, non_retryable: bool
) -> None:
    with pytest.raises(ApplicationError) as raised:
        await _bookkeeping(_raise(error))

    assert raised.value.type == failure
    assert raised.value.non_retryable is non_retryable
    assert raised.value.message.startswith("platform metadata write failed")
