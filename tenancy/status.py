"""The tenant status machine: which transitions exist and from where they may be applied."""

from __future__ import annotations

from enum import StrEnum


class TenantStatus(StrEnum):
    """Lifecycle of a tenant, as stored and as shown in the Temporal search attribute."""

    PROVISIONING = "PROVISIONING"
    MIGRATING = "MIGRATING"
    ACTIVE = "ACTIVE"
    PROVISION_ERROR = "PROVISION_ERROR"
    MIGRATION_ERROR = "MIGRATION_ERROR"


class MigrationStatus(StrEnum):
    """State of one downstream service's migrations for one tenant."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


# Target -> the only states it may be entered from. Anything else (a late or repeated activity,
# an operator racing the workflow) is refused, so a tenant never moves backwards.
ALLOWED_SOURCES: dict[TenantStatus, frozenset[TenantStatus]] = {
    TenantStatus.PROVISIONING: frozenset(),
    TenantStatus.MIGRATING: frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATION_ERROR}),
    TenantStatus.ACTIVE: frozenset({TenantStatus.MIGRATING}),
    TenantStatus.PROVISION_ERROR: frozenset({TenantStatus.PROVISIONING}),
    TenantStatus.MIGRATION_ERROR: frozenset({TenantStatus.MIGRATING}),
}


def can_transition(source: TenantStatus, target: TenantStatus) -> bool:
    """True when the status machine allows `source -> target`."""
    return source in ALLOWED_SOURCES[target]
