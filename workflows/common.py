"""What every workflow shares: how an activity is scheduled (local or regular, timeouts,
retries) and the one status-transition step (row, search attribute, log)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.metadata import MetadataActivities
    from infra import search_attributes as sa
    from tenancy.contracts import RecordEventInput, TransitionInput
    from tenancy.failures import FailureType, summarize
    from tenancy.models import EventAction
    from tenancy.status import TenantStatus

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class ActivityOptions:
    """How one kind of activity is scheduled: local or regular, timeouts and retries."""

    start_to_close: timedelta
    retry: RetryPolicy
    local: bool = False
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None
    # None: the workflow's own task queue.
    task_queue: str | None = None
    # How long the call may wait in its task queue for a worker (regular activities only):
    # a queue no worker polls fails the attempt instead of holding the run for ever.
    schedule_to_start: timedelta | None = None


# Metadata writes are short; a database outage is waited out rather than failing the tenant.
METADATA_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)

# The short metadata writes run as local activities: in the workflow task that asks for them,
# with no task-queue round trip and three history events fewer each. A worker that crashes
# mid-task runs them again, which they tolerate: the insert finds its own row, a repeated
# transition is a no-op, the failure record is an upsert.
# Storage DDL and downstream calls stay regular activities: long, and not to be repeated
# because another step of the same task failed.
# Bounded: a metadata database away for longer than this ends the step (and the run) with
# the reason, rather than a run retrying for ever; the tenant is then stuck without a workflow,
# which the reconciler reports and restarts (docs/operating/recovery.md). Errors that repeat on
# every attempt (data, integrity) are not retried at all (activities/metadata.py).
METADATA_WRITE = ActivityOptions(
    start_to_close=timedelta(seconds=10),
    schedule_to_close=timedelta(minutes=10),
    retry=METADATA_RETRY,
    local=True,
)


def as_regular(options: ActivityOptions) -> ActivityOptions:
    """The same options as a regular activity: how runs started before a patch ran them."""
    return replace(options, local=False)


def local_attempt(options: ActivityOptions) -> ActivityOptions:
    """One attempt of a regular activity made as a local activity, inside the workflow task
    that asks for it: no task-queue round trip, no task of its own to record. Only one: any
    failure that a retry could fix hands the call to the regular activity (`options`)."""
    return replace(
        options,
        local=True,
        task_queue=None,
        schedule_to_start=None,
        schedule_to_close=None,
        heartbeat=None,
        retry=RetryPolicy(maximum_attempts=1),
    )


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and its causes, outermost first."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def _application_errors(error: BaseException) -> list[ApplicationError]:
    return [c for c in _causes(error) if isinstance(c, ApplicationError)]


def is_final(error: FailureError, options: ActivityOptions) -> bool:
    """Whether `error` would end the regular activity too: the activity raised it non-retryable,
    or `options`' retry policy names its type."""
    final_types = set(options.retry.non_retryable_error_types or ())
    return any(c.non_retryable or c.type in final_types for c in _application_errors(error))


def was_declined(error: FailureError) -> bool:
    """Whether a local attempt was declined by the worker (nothing was done)."""
    return any(c.type == FailureType.LOCAL_DECLINED for c in _application_errors(error))


async def run_activity(
    method: Callable[[Any, ArgT], Awaitable[ResultT]],
    arg: ArgT,
    options: ActivityOptions,
) -> ResultT:
    """Run an activity method as a local or a regular activity, as its options say."""
    if options.local:
        return await workflow.execute_local_activity_method(
            method,
            arg,
            start_to_close_timeout=options.start_to_close,
            schedule_to_close_timeout=options.schedule_to_close,
            retry_policy=options.retry,
        )
    return await workflow.execute_activity_method(
        method,
        arg,
        task_queue=options.task_queue,
        start_to_close_timeout=options.start_to_close,
        schedule_to_close_timeout=options.schedule_to_close,
        schedule_to_start_timeout=options.schedule_to_start,
        heartbeat_timeout=options.heartbeat,
        retry_policy=options.retry,
    )


async def transition_tenant(
    tenant_id: str,
    target: TenantStatus,
    reason: str | None,
    options: ActivityOptions = METADATA_WRITE,
) -> None:
    """Move the tenant's row to `target` (guarded by the status machine, so a repeat is a no-op
    and a move backwards is refused), then the run's `TenantStatus` search attribute, then log.
    Each workflow counts its own outcomes in metrics after this."""
    await run_activity(
        MetadataActivities.transition_status,
        TransitionInput(tenant_id=tenant_id, target=target, reason=reason),
        options,
    )
    follow_status(tenant_id, target, reason)


def follow_status(tenant_id: str, target: TenantStatus, reason: str | None) -> None:
    """The run's `TenantStatus` search attribute and log line after the row moved to `target`
    (by `transition_tenant`, or by an activity that moved it as part of its own step)."""
    workflow.upsert_search_attributes([sa.TENANT_STATUS.value_set(target.value)])
    workflow.logger.info(
        "tenant %s is %s%s", tenant_id, target.value, f": {reason}" if reason else ""
    )


async def record_retry_request(
    tenant_id: str,
    actor: str,
    operation: str,
    cycle: int,
    options: ActivityOptions = METADATA_WRITE,
) -> None:
    """Write the RETRY_REQUESTED event of the retry a waiting run takes in retry `cycle`
    (`operation`, such as retry-migration), before the run acts on it: once per run and cycle,
    however often it is written. A workflow task that times out under load is retried
    with the run's updates delivered again, maybe in another order, so the local activity can
    run again for another update of the same cycle; only one retry per cycle ever happens."""
    info = workflow.info()
    await run_activity(
        MetadataActivities.record_event,
        RecordEventInput(
            tenant_id=tenant_id,
            actor=actor,
            action=EventAction.RETRY_REQUESTED,
            reason=operation,
            key=f"{info.workflow_id}/{info.run_id}/{operation}/{cycle}",
        ),
        options,
    )


def failure_reason(error: FailureError) -> str:
    """Why an activity failed, as one short line: the activity's own ApplicationError message
    if it raised one, else the innermost cause (a timeout, say)."""
    own = _application_errors(error)
    cause = own[0] if own else _causes(error)[-1]
    # FailureError.message is the bare message; str() would prefix the failure type.
    text = cause.message if isinstance(cause, FailureError) else str(cause)
    return summarize(text or type(cause).__name__)


def never_started(error: FailureError) -> bool:
    """True when the activity failed because no worker took it within its schedule-to-start
    timeout: nobody polls its task queue (or every poller stayed busy that long)."""
    return (
        isinstance(error, ActivityError)
        and isinstance(error.cause, TemporalTimeoutError)
        and error.cause.type is TimeoutType.SCHEDULE_TO_START
    )
