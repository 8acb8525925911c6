"""The platform's own metadata writes inside activities: one rule for what their failures mean,
and the status transition every activity that moves a tenant makes (`transition`).

A transient database failure (see `infra.db.errors`) fails the attempt retryably, as
`MetadataUnavailable`, which never counts against a downstream service's attempts; a
permanent one (data, integrity, programming errors) fails the step for good as
`MetadataRejected`, with its reason, since every retry would fail the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.db.errors import ErrorKind, classify
from infra.db.repository import TenantRepository, TransitionRefused
from tenancy.failures import FailureType, summarize
from tenancy.naming import workflow_actor
from tenancy.status import TenantStatus

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


def attempt_actor() -> str:
    """Who an activity attempt acts for in the audit trail: its workflow."""
    return workflow_actor(activity.info().workflow_id or "unknown")


async def transition(
    tenants: TenantRepository, tenant_id: str, target: TenantStatus, reason: str | None = None
) -> TenantStatus:
    """Apply a status transition from inside an activity, as its workflow: a repeat is a no-op,
    a refused move fails the step for good (`IllegalTransition`)."""
    try:
        with metadata_failures("transition_status"):
            return await tenants.transition(tenant_id, target, reason, attempt_actor())
    except TransitionRefused as refused:
        raise ApplicationError(
            str(refused), type=FailureType.ILLEGAL_TRANSITION, non_retryable=True
        ) from None
