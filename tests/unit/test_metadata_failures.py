"""The metadata activities' error classification: what may pass is retried, what repeats on
every attempt ends the step."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import metadata_failures
from tenancy.failures import FailureType

RETRYABLE = [
    psycopg.OperationalError("connection refused"),
    errors.AdminShutdown("terminating connection due to administrator command"),
    errors.QueryCanceled("canceling statement due to statement timeout"),
    errors.SerializationFailure("could not serialize access"),
    psycopg.InterfaceError("the connection is closed"),
    PoolTimeout("couldn't get a connection after 30.00 sec"),
]
DEFINITE = [
    errors.UntranslatableCharacter("invalid byte sequence"),
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    errors.UniqueViolation("duplicate key value"),
    errors.UndefinedTable('relation "tenants" does not exist'),
    errors.CheckViolation("violates check constraint"),
]


def raised(error: Exception) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught, metadata_failures("record_tenant"):
        raise error
    return caught.value


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda e: type(e).__name__)
def test_errors_that_may_pass_are_retried(error: Exception) -> None:
    failure = raised(error)
    assert failure.type == FailureType.METADATA_UNAVAILABLE
    assert not failure.non_retryable
    assert failure.message.startswith("platform metadata write failed (record_tenant)")


@pytest.mark.parametrize("error", DEFINITE, ids=lambda e: type(e).__name__)
def test_errors_that_repeat_end_the_step(error: Exception) -> None:
    failure = raised(error)
    assert failure.type == FailureType.METADATA_REJECTED
    assert failure.non_retryable


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), metadata_failures("record_tenant"):
        raise KeyError("not a database error")
