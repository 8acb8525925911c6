"""Inputs and results of `DeleteTenantWorkflow` itself: its start argument, its signals' and
updates' arguments and answers, and the state its query returns."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from tenancy.models import BackupRecord, CamelModel
from tenancy.status import TenantStatus

# The names operators' scripts and the API address the workflow by (docs/concepts/workflows.md).
WORKFLOW_NAME = "DeleteTenantWorkflow"
CANCEL_SIGNAL = "cancel_deletion"
RETRY_SIGNAL = "retry_deletion"
STATUS_QUERY = "get_status"
SCHEDULED_UPDATE = "deletion_scheduled"
RETRY_UPDATE = "request_retry"


class ResumeDeletion(CamelModel):
    """A run that takes over a deletion already recorded on the row (a lost run, a retry of a
    closed one, continue-as-new): it reads where the deletion stands and carries on."""

    # Who asked: an operator's subject, `reconciler:<subject>` or the workflow itself.
    actor: str
    # True: a failed purge is retried at once (retry-deletion); False: it waits for a retry.
    retry: bool = False


class DeleteInput(CamelModel):
    """Start argument of `DeleteTenantWorkflow`."""

    tenant_id: str
    requested_by: str
    reason: str | None = None
    grace_seconds: int = Field(default=0, ge=0)
    resume: ResumeDeletion | None = None


class CancelDeletion(CamelModel):
    """Argument of the `cancel_deletion` signal (restore); optional for automation."""

    requested_by: str = "signal"
    reason: str | None = None


class DeletionState(CamelModel):
    """Answer of the `get_status` query and the `deletion_scheduled` update."""

    tenant_id: str
    status: TenantStatus | None = None
    reason: str | None = None
    scheduled: bool = False
    requested_at: datetime | None = None
    purge_at: datetime | None = None
    backup: BackupRecord | None = None
    # Per service: "DONE" or the last error of its teardown.
    services: dict[str, str] = Field(default_factory=dict)
    # The step that failed last: backup, teardown or drop.
    failed_step: str | None = None
    retry_cycle: int = 0
