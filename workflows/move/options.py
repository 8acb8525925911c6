"""Every step's activity options of `MoveTenantWorkflow` in one place. The mechanism
(`ActivityOptions`, `run_activity`) is `workflows.common`."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tenancy.failures import FailureType
    from workflows.common import METADATA_WRITE, ActivityOptions

# The row's reads and writes (load, phase, reason, switch, rollback) are short local activities.
LOAD = PHASE = REASON = SWITCH = ROLL_BACK = METADATA_WRITE

_FINAL = [FailureType.MOVE_FAILED, FailureType.MOVE_VERIFY_FAILED, FailureType.METADATA_REJECTED]

# A storage step before the switch: a server away is retried a few times, then the move rolls
# back (the tenant stays ACTIVE on its source) rather than staying frozen for long.
STORAGE_STEP = ActivityOptions(
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=4,
        non_retryable_error_types=_FINAL,
    ),
)

# The copy: its own timeout (PLATFORM_MOVE_COPY_TIMEOUT) bounds pg_dump and pg_restore; the
# heartbeat finds a lost worker in seconds.
COPY = ActivityOptions(
    start_to_close=timedelta(hours=3),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=3,
        non_retryable_error_types=_FINAL,
    ),
)
VERIFY = COPY

# Undoing a move: retried until done (a server away for hours is
# waited out; the run records why it waits between rounds of attempts).
UNDO = ActivityOptions(
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
    ),
)
# Between rounds of UNDO's attempts.
UNDO_PAUSE = timedelta(seconds=30)
