"""Typed inputs and results of the activities, shared by every workflow that runs them.

One model per call so that fields can be added without breaking running workflows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from tenancy.models import (
    BackupRecord,
    CamelModel,
    EventAction,
    StorageLocation,
    StorageMode,
    Tenant,
    TenantSpec,
)
from tenancy.status import TenantStatus


class AdoptRun(CamelModel):
    """A run that takes the tenant over from a closed run of its workflow (see
    docs/operating/recovery.md): the row is handed over only while `replaces_run_id` still
    owns it."""

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
    # How long a call may wait in its task queue for a worker (absent in plans before it).
    schedule_to_start: timedelta | None = None


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


class ClaimTenantInput(CamelModel):
    """Argument of `claim_tenant`: `record_tenant` with the worker's own services."""

    spec: TenantSpec
    workflow_id: str
    run_id: str
    created_by: str | None = None
    adopt: AdoptRun | None = None

    def recording(self, services: list[str]) -> RecordTenantInput:
        """The same claim as `record_tenant`'s argument, with `services`."""
        return RecordTenantInput(
            spec=self.spec,
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            services=services,
            created_by=self.created_by,
            adopt=self.adopt,
        )


class ClaimedTenant(CamelModel):
    """Result of `claim_tenant`: the run's plan and the row it now owns."""

    plan: ProvisioningPlan
    tenant: Tenant


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
    # Set by runs with the lean history: the status the tenant moves to once its storage is
    # recorded, in the same attempt (None, as in histories before it: the workflow moves it).
    then_status: TenantStatus | None = None


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
    # Set by runs with the lean history: a call that succeeds and finds every service of the
    # tenant migrated moves it from MIGRATING to ACTIVE itself (the run then only follows).
    activate: bool = False


class MigrateResult(CamelModel):
    """The version a downstream service reports as applied."""

    service: str
    version: str
    # This call moved the tenant to ACTIVE (`MigrateInput.activate`).
    activated: bool = False


class MigrationFailedInput(CamelModel):
    """Argument of `mark_migration_failed`, once a service's retries are spent."""

    tenant_id: str
    service: str
    error: str


class RecordEventInput(CamelModel):
    """Argument of `record_event`: an operator's action, written to the audit trail once per
    `key` (a local activity runs again when its workflow task is retried)."""

    tenant_id: str
    actor: str
    action: EventAction
    reason: str | None = None
    key: str | None = None


class StopProvisioningInput(CamelModel):
    """Argument of `stop_provisioning`: cancel the tenant's open provisioning run, if any."""

    tenant_id: str


class ScheduleDeletionInput(CamelModel):
    """Argument of `schedule_deletion`: the request, with its times from the workflow's clock."""

    tenant_id: str
    requested_by: str
    reason: str | None = None
    requested_at: datetime
    purge_at: datetime


class RestoreInput(CamelModel):
    """Argument of `restore_tenant`: which deletion it cancels (`requested_at`), by whom."""

    tenant_id: str
    actor: str
    reason: str | None = None
    requested_at: datetime | None = None


class LoadDeletionInput(CamelModel):
    """Argument of `load_deletion`."""

    tenant_id: str


class DeletionProgressResult(CamelModel):
    """What `load_deletion` reads from the row: where the deletion stands."""

    status: TenantStatus
    storage_mode: StorageMode
    requested_at: datetime | None = None
    purge_at: datetime | None = None
    backup: BackupRecord | None = None
    torn_down: list[str] = Field(default_factory=list)


class BackupInput(CamelModel):
    """Argument of `backup_storage`: one backup per deletion request, named by `label`."""

    tenant_id: str
    mode: StorageMode
    label: str


class BackupResult(CamelModel):
    """The backup on disk, or none (no backup folder configured, or no storage to back up)."""

    backup: BackupRecord | None = None
    skipped: str | None = None


class TeardownInput(CamelModel):
    """Argument of `teardown_service`: one logical call, retried under one idempotency key."""

    tenant_id: str
    service: str
    mode: StorageMode
    idempotency_key: str
    timeout: timedelta


class DropStorageInput(CamelModel):
    """Argument of `drop_storage`."""

    tenant_id: str
    mode: StorageMode
