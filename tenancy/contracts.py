"""Typed inputs and results of the activities, shared by every workflow that runs them.

One model per call so that fields can be added without breaking running workflows.
"""

from __future__ import annotations

from datetime import timedelta

from tenancy.models import CamelModel, EventAction, StorageLocation, StorageMode, TenantSpec
from tenancy.status import TenantStatus


class AdoptRun(CamelModel):
    """A run that takes the tenant over from a closed run of its workflow (see README,
    Recovery): the row is handed over only while `replaces_run_id` still owns it."""

    replaces_run_id: str
    # Who asked: an operator's subject, `reconciler:<subject>` or the workflow itself.
    actor: str
    reason: str


class MigrationRetry(CamelModel):
    """Retry policy of each downstream migration call, from the worker's settings."""

    max_attempts: int
    initial_interval: timedelta
    max_interval: timedelta
    timeout: timedelta


class PlanInput(CamelModel):
    """Argument of `load_plan` (empty today; a model so fields can be added)."""


class ProvisioningPlan(CamelModel):
    """Which services to migrate and how hard to try; recorded in history once per run."""

    services: list[str]
    migration_retry: MigrationRetry


class RecordTenantInput(CamelModel):
    """Argument of `record_tenant`."""

    spec: TenantSpec
    workflow_id: str
    run_id: str
    services: list[str]
    created_by: str | None = None
    adopt: AdoptRun | None = None


class TransitionInput(CamelModel):
    """Argument of `transition_status`."""

    tenant_id: str
    target: TenantStatus
    reason: str | None = None


class TransitionResult(CamelModel):
    """The status the tenant is in after the transition."""

    status: TenantStatus


class CreateStorageInput(CamelModel):
    """Argument of `create_storage`."""

    tenant_id: str
    mode: StorageMode


class MigrateInput(CamelModel):
    """Argument of `migrate_service`: one logical call, retried under one idempotency key."""

    tenant_id: str
    service: str
    location: StorageLocation
    idempotency_key: str
    timeout: timedelta
    # Failed calls that reached the service after which this logical call fails for good;
    # None (histories from before it) leaves the limit to the retry policy's attempts.
    max_attempts: int | None = None


class MigrateResult(CamelModel):
    """The version a downstream service reports as applied."""

    service: str
    version: str


class MigrationFailedInput(CamelModel):
    """Argument of `mark_migration_failed`, once a service's retries are spent."""

    tenant_id: str
    service: str
    error: str


class RecordEventInput(CamelModel):
    """Argument of `record_event`: an operator's action, written to the audit trail."""

    tenant_id: str
    actor: str
    action: EventAction
    reason: str | None = None
