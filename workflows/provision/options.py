"""Every step's activity options of `ProvisionTenantWorkflow` in one place: tuning a step is a
one-line change here. The mechanism (`ActivityOptions`, `run_activity`) is `workflows.common`."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    # Re-exported: the provisioning workflow reaches every option through this module.
    from tenancy.contracts import MigrationRetry
    from tenancy.failures import FailureType

    # Re-exported for the workflow, which reaches domain helpers through this module.
    from tenancy.naming import migration_task_queue as migration_task_queue
    from workflows.common import (
        METADATA_RETRY,
        METADATA_WRITE,
    )
    from workflows.common import (
        ActivityOptions as ActivityOptions,
    )
    from workflows.common import (
        as_regular as as_regular,
    )

LOAD_PLAN = ActivityOptions(start_to_close=timedelta(seconds=5), retry=METADATA_RETRY, local=True)
# Runs started before the patch schedule the metadata writes as regular activities.
RECORD_TENANT = TRANSITION_STATUS = MARK_MIGRATION_FAILED = RECORD_EVENT = METADATA_WRITE
LOCAL_METADATA_PATCH = "local-metadata-activities"


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
# Runs that took it give each call on a service's queue `MigrationRetry.schedule_to_start` to
# find a worker; runs started before wait for one without a bound (the reconciler reports them).
SCHEDULE_TO_START_PATCH = "migration-schedule-to-start"


def migrate_service_options(
    retry: MigrationRetry, task_queue: str | None = None, *, bounded_wait: bool = False
) -> ActivityOptions:
    """Options of one migration call, from the worker's configured retry policy.

    Temporal retries without limit: the activity itself counts the calls that reached the
    service and fails for good at `retry.max_attempts` (`MigrateInput.max_attempts`), so a
    retry after a failure of the platform's own (a bookkeeping write, a lost worker) does
    not use up the service's attempts.

    With `bounded_wait`, a call that no worker takes within `retry.schedule_to_start` fails
    (Temporal does not retry a schedule-to-start timeout): the run records it and waits for
    retry-migration, which works once a worker polls the queue again.
    """
    return ActivityOptions(
        # The HTTP call itself is bounded by `retry.timeout`; the margin covers the
        # bookkeeping around it, and bounds how long a dead worker can hide an attempt.
        start_to_close=retry.timeout + timedelta(seconds=10),
        task_queue=task_queue,
        schedule_to_start=retry.schedule_to_start if bounded_wait else None,
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
