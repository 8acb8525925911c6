"""Every step's activity options of `DrainServerWorkflow` in one place. The mechanism
(`ActivityOptions`, `run_activity`) is `workflows.common`."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.common import METADATA_WRITE

# Every drain step is a short read or guarded write of the metadata database (a begin takes
# placement's locks): local activities.
LOAD = BEGIN = TENANT_STATE = PROGRESS = FINISH = METADATA_WRITE

# How often a tenant moving by another run (an operator's move) is looked at until it ends.
MOVE_POLL = timedelta(seconds=2)
