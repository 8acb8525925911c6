"""The platform's own metadata writes inside activities: one rule for what their failures mean.

A transient database failure (see `infra.db.errors`) fails the attempt retryably, as
`MetadataUnavailable`, which never counts against a downstream service's attempts; a
permanent one (data, integrity, programming errors) fails the step for good as
`MetadataRejected`, with its reason, since every retry would fail the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from temporalio.exceptions import ApplicationError

from infra.db.errors import ErrorKind, classify
from tenancy.failures import FailureType, summarize

# What the database, its pool and the network raise; domain exceptions pass through.
_DATABASE_ERRORS = (psycopg.Error, OSError, TimeoutError)


@contextmanager
def metadata_failures(step: str) -> Iterator[None]:
    """Turn a database error raised by the body into the failure the retry policy reads."""
    try:
        yield
    except _DATABASE_ERRORS as exc:
        reason = summarize(f"platform metadata write failed ({step}): {exc or type(exc).__name__}")
        if classify(exc) is ErrorKind.TRANSIENT:
            raise ApplicationError(reason, type=FailureType.METADATA_UNAVAILABLE) from None
        raise ApplicationError(
            reason, type=FailureType.METADATA_REJECTED, non_retryable=True
        ) from None
