"""Failure types carried by `ApplicationError.type` across the workflow boundary.

Callers match on these names, never on messages:

    TENANT_EXISTS          record_tenant found a row owned by another workflow run
    ILLEGAL_TRANSITION     the status machine refused a transition
    STORAGE_FORBIDDEN      the storage server refused the DDL for a reason no retry can fix
                           (privilege, name, syntax: see infra.db.errors)
    STORAGE_FAILED         storage creation failed for a transient reason (retried)
    MIGRATION_REJECTED     a downstream service answered a non-retryable 4xx
    MIGRATION_UNAVAILABLE  timeout, connection error, 408, 429 or 5xx (retried)
    MIGRATION_EXHAUSTED    the service failed as many calls of one logical call as allowed
    METADATA_UNAVAILABLE   the metadata database could not be reached, or a write there failed
                           transiently (retried; never counts against a service's attempts)
    METADATA_REJECTED      the metadata database refused a write: data, integrity or
                           programming error (no retry can fix it)
    UNKNOWN_SERVICE        the workflow named a service this worker is not configured with
    PROVISION_FAILED       the workflow ended in PROVISION_ERROR
    PROVISION_CANCELLED    the run was cancelled before it recorded the tenant
    BUS_UNAVAILABLE        the bus did not take a command for a service with transport events
                           (retried; the platform's own failure, never counted against it)
"""

from __future__ import annotations

from enum import StrEnum


class FailureType(StrEnum):
    """Values of `ApplicationError.type` raised by activities and the workflow."""

    TENANT_EXISTS = "TenantAlreadyExists"
    ILLEGAL_TRANSITION = "IllegalTransition"
    STORAGE_FORBIDDEN = "StorageForbidden"
    STORAGE_FAILED = "StorageFailed"
    MIGRATION_REJECTED = "MigrationRejected"
    MIGRATION_UNAVAILABLE = "MigrationUnavailable"
    MIGRATION_EXHAUSTED = "MigrationAttemptsExhausted"
    METADATA_UNAVAILABLE = "MetadataUnavailable"
    METADATA_REJECTED = "MetadataRejected"
    UNKNOWN_SERVICE = "UnknownService"
    PROVISION_FAILED = "ProvisionFailed"
    PROVISION_CANCELLED = "ProvisionCancelled"
    # No storage server of the tenant's pool may take it (cordoned, full, or none takes its
    # storage mode): PROVISION_ERROR until retry-provisioning places it.
    NO_STORAGE_ROOM = "NoStorageServerWithRoom"
    # Offboarding.
    TENANT_NOT_FOUND = "TenantNotFound"
    DELETION_CONFLICT = "DeletionAlreadyRequested"
    BACKUP_FAILED = "BackupFailed"
    BACKUP_REFUSED = "BackupRefused"
    TEARDOWN_REJECTED = "TeardownRejected"
    TEARDOWN_UNAVAILABLE = "TeardownUnavailable"
    DROP_FAILED = "StorageDropFailed"
    DROP_REFUSED = "StorageDropRefused"
    # Moves between storage servers: a step that failed for good (the move rolls back), and
    # a copy whose content differs from its source (never switched to).
    MOVE_FAILED = "MoveFailed"
    MOVE_VERIFY_FAILED = "MoveVerifyFailed"
    # Event-driven calls.
    BUS_UNAVAILABLE = "CommandBusUnavailable"
    # A local attempt (run inside the workflow task) that the worker declined to make: no
    # free slot in this process, or a call that must go through its task queue. The workflow
    # then schedules the regular activity; nothing was done.
    LOCAL_DECLINED = "LocalAttemptDeclined"


def summarize(text: str, limit: int = 300) -> str:
    """One short line fit for `lastError`: control characters (NUL included, which
    PostgreSQL refuses in text) folded, long text cut."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
