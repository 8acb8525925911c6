"""Inputs and results of `DrainServerWorkflow`: its start argument, its signal and the state
its query returns. The drain's state (DRAINING) and progress live on the server's row."""

from __future__ import annotations

from pydantic import Field

from tenancy.drains import DrainFailure
from tenancy.fleet import ServerState
from tenancy.models import CamelModel

# The names operators' scripts and the API address the workflow by (docs/concepts/workflows.md).
WORKFLOW_NAME = "DrainServerWorkflow"
CANCEL_SIGNAL = "cancel_drain"
STATUS_QUERY = "get_status"
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 32


def drain_workflow_id(server: str) -> str:
    """The id of the server's drain run: one drain of a server at a time."""
    return f"server-drain-{server}"


class DrainInput(CamelModel):
    """Start argument of `DrainServerWorkflow`."""

    server: str
    requested_by: str
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)
    reason: str | None = None


class CancelDrain(CamelModel):
    """Argument of the cancel signal: who asked."""

    requested_by: str | None = None


class DrainState(CamelModel):
    """What the run's query answers, and its result: the drain's progress."""

    server: str
    total: int = 0
    moved: int = 0
    failed: int = 0
    running: int = 0
    failures: list[DrainFailure] = Field(default_factory=list)
    cancel_requested: bool = False
    # The server's state once the run ended (None while it runs).
    state: ServerState | None = None
