"""Every step's activity options of `DeleteTenantWorkflow` in one place. The mechanism
(`ActivityOptions`, `run_activity`) is `workflows.common`."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts import MigrationRetry
    from tenancy.failures import FailureType
    from workflows.common import METADATA_RETRY, METADATA_WRITE, ActivityOptions

# The short metadata reads and writes (schedule, restore, load) run as local activities.
SCHEDULE = RESTORE = LOAD = RECORD_EVENT = METADATA_WRITE
LOAD_PLAN = ActivityOptions(start_to_close=timedelta(seconds=5), retry=METADATA_RETRY, local=True)

# Waits for the provisioning run to close after its cancellation: seconds, unless no worker
# runs it; the heartbeat shows a lost worker in seconds.
STOP_PROVISIONING = ActivityOptions(
    start_to_close=timedelta(minutes=5),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
    ),
)

# A dump may take long; it heartbeats, and the worker's PLATFORM_DELETION_BACKUP_TIMEOUT bounds
# the dump itself. A server that is away is retried a few times; a refusal is final.
BACKUP = ActivityOptions(
    start_to_close=timedelta(hours=2),
    heartbeat=timedelta(seconds=30),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=1),
        maximum_attempts=5,
        non_retryable_error_types=[FailureType.BACKUP_REFUSED, FailureType.METADATA_REJECTED],
    ),
)

# DROP DATABASE ... WITH (FORCE) ends the sessions on it; a lock held on the schema makes the
# drop wait, which the heartbeat keeps visible.
DROP_STORAGE = ActivityOptions(
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=10,
        non_retryable_error_types=[FailureType.DROP_REFUSED],
    ),
)


def teardown_options(retry: MigrationRetry) -> ActivityOptions:
    """Options of one teardown call: the same budget and classification as a migration call
    (408, 429, 5xx and no answer retried up to the configured attempts; other 4xx final)."""
    return ActivityOptions(
        start_to_close=retry.timeout + timedelta(seconds=10),
        retry=RetryPolicy(
            initial_interval=retry.initial_interval,
            backoff_coefficient=2.0,
            maximum_interval=retry.max_interval,
            maximum_attempts=retry.max_attempts,
            non_retryable_error_types=[
                FailureType.TEARDOWN_REJECTED,
                FailureType.UNKNOWN_SERVICE,
                FailureType.METADATA_REJECTED,
            ],
        ),
    )
