"""The tenant status machine: which transitions exist and from where they may be applied."""

from __future__ import annotations

from enum import Enum, StrEnum


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
    # A new run that adopts a failed provisioning starts it over (retry-provisioning).
    TenantStatus.PROVISIONING: frozenset({TenantStatus.PROVISION_ERROR}),
    TenantStatus.MIGRATING: frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATION_ERROR}),
    TenantStatus.ACTIVE: frozenset({TenantStatus.MIGRATING}),
    TenantStatus.PROVISION_ERROR: frozenset({TenantStatus.PROVISIONING}),
    TenantStatus.MIGRATION_ERROR: frozenset({TenantStatus.MIGRATING}),
}


def can_transition(source: TenantStatus, target: TenantStatus) -> bool:
    """True when the status machine allows `source -> target`."""
    return source in ALLOWED_SOURCES[target]


class Decision(Enum):
    """What a guarded transition does, given the tenant's current status."""

    APPLY = "apply"
    NO_OP = "no-op"
    REFUSE = "refuse"


def decide(current: TenantStatus | None, target: TenantStatus) -> Decision:
    """The guarded transition's rule: a repeat is a no-op (a retried or late activity), an
    allowed source applies, anything else (no row, a move backwards) is refused."""
    if current is target:
        return Decision.NO_OP
    if current is not None and current in ALLOWED_SOURCES[target]:
        return Decision.APPLY
    return Decision.REFUSE
