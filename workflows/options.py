"""Every step's activity options in one place: tuning a step is a one-line change here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts import MigrationRetry
    from tenancy.failures import FailureType

    # Re-exported for the workflow, which reaches domain helpers through this module.
    from tenancy.naming import migration_task_queue as migration_task_queue

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


# Metadata writes are short; a database outage is waited out rather than failing the tenant.
_METADATA_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)

LOAD_PLAN = ActivityOptions(start_to_close=timedelta(seconds=5), retry=_METADATA_RETRY, local=True)
# The short metadata writes run as local activities (patch LOCAL_METADATA_PATCH): in the
# workflow task that asks for them, with no task-queue round trip and three history events
# fewer each. A worker that crashes mid-task runs them again, which they tolerate: the insert
# finds its own row, a repeated transition is a no-op, the failure record is an upsert.
# Storage DDL and downstream calls stay regular activities: long, and not to be repeated
# because another step of the same task failed.
# Bounded: a metadata database away for longer than this ends the step (and the run) with
# the reason, rather than a run retrying for ever; the tenant is then stuck without a workflow,
# which the reconciler reports and restarts (README, Recovery). Errors that repeat on every
# attempt (data, integrity) are not retried at all (activities/metadata.py).
_METADATA_WRITE = ActivityOptions(
    start_to_close=timedelta(seconds=10),
    schedule_to_close=timedelta(minutes=10),
    retry=_METADATA_RETRY,
    local=True,
)
RECORD_TENANT = TRANSITION_STATUS = MARK_MIGRATION_FAILED = RECORD_EVENT = _METADATA_WRITE
LOCAL_METADATA_PATCH = "local-metadata-activities"


def as_regular(options: ActivityOptions) -> ActivityOptions:
    """The same options as a regular activity: how runs started before the patch ran them."""
    return replace(options, local=False)


# Transient DDL failures (the server is down, out of connections, a lock timeout, no free
# slot) are retried for as long as they last, so there is no schedule-to-close: it would
# count time queued in the task queue and every throttled retry, and fail the tenant for a
# blip. Permanent ones fail at once (the activity raises them non-retryable).
CREATE_STORAGE = ActivityOptions(
    start_to_close=timedelta(minutes=2),
    # The activity heartbeats while its DDL runs, so a dead worker shows in seconds, not minutes.
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
    ),
)

# Runs that took it schedule each service's migration calls on the service's own task queue
# (`migration_task_queue`); runs started before keep the workflow's queue.
PER_SERVICE_QUEUES_PATCH = "per-service-task-queues"


def migrate_service_options(
    retry: MigrationRetry, task_queue: str | None = None
) -> ActivityOptions:
    """Options of one migration call, from the worker's configured retry policy.

    Temporal retries without limit: the activity itself counts the calls that reached the
    service and fails for good at `retry.max_attempts` (`MigrateInput.max_attempts`), so a
    retry after a failure of the platform's own (a bookkeeping write, a lost worker) does
    not use up the service's attempts.
    """
    return ActivityOptions(
        # The HTTP call itself is bounded by `retry.timeout`; the margin covers the
        # bookkeeping around it, and bounds how long a dead worker can hide an attempt.
        start_to_close=retry.timeout + timedelta(seconds=10),
        task_queue=task_queue,
        retry=RetryPolicy(
            initial_interval=retry.initial_interval,
            backoff_coefficient=2.0,
            maximum_interval=retry.max_interval,
            non_retryable_error_types=[
                FailureType.MIGRATION_REJECTED,
                FailureType.MIGRATION_EXHAUSTED,
                FailureType.METADATA_REJECTED,
                FailureType.UNKNOWN_SERVICE,
            ],
        ),
    )


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
        heartbeat_timeout=options.heartbeat,
        retry_policy=options.retry,
    )
