"""Inputs and results of `ProvisionTenantWorkflow` itself: its start argument, its update
arguments and answers, and the state its query returns.

One model per call so that fields can be added without breaking running workflows. Payloads are
JSON, so a model's Python name may change without touching recorded histories.
"""

from __future__ import annotations

from pydantic import Field

from tenancy.contracts import AdoptRun
from tenancy.models import CamelModel, StorageLocation, TenantSpec
from tenancy.status import MigrationStatus, TenantStatus

# The names operators' scripts and the API address the workflow by (docs/concepts/workflows.md).
WORKFLOW_NAME = "ProvisionTenantWorkflow"
RETRY_SIGNAL = "retry_migration"
STATUS_QUERY = "get_status"
RECORDED_UPDATE = "tenant_recorded"
RETRY_UPDATE = "request_retry"


class ServiceState(CamelModel):
    """Live state of one service's migration inside the workflow."""

    status: MigrationStatus = MigrationStatus.PENDING
    version: str | None = None
    error: str | None = None


class ResumeState(CamelModel):
    """What a run carries into its continuation (continue-as-new), so that the new run
    skips the steps already done."""

    status: TenantStatus
    reason: str | None = None
    storage: StorageLocation
    services: dict[str, ServiceState]
    retry_cycle: int = 0


class ProvisionInput(CamelModel):
    """Start argument of `ProvisionTenantWorkflow`."""

    spec: TenantSpec
    # The authenticated subject that asked for the tenant (absent in histories before it).
    requested_by: str | None = None
    # Set when this run replaces a closed one (retry, reconciler, continue-as-new).
    adopt: AdoptRun | None = None
    resume: ResumeState | None = None


class RetryRequest(CamelModel):
    """Argument of the `request_retry` update."""

    requested_by: str


class RetryDecision(CamelModel):
    """Answer of the `request_retry` update: whether this request started a retry."""

    accepted: bool
    status: TenantStatus


class ProvisionState(CamelModel):
    """Answer of the `get_status` query and the `tenant_recorded` update."""

    tenant_id: str
    status: TenantStatus
    reason: str | None = None
    recorded: bool = False
    storage: StorageLocation | None = None
    services: dict[str, ServiceState] = Field(default_factory=dict)
    retry_cycle: int = 0
