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
    # Offboarding: waiting out the grace period (restore possible), purging, purge failed (retry
    # resumes it), purged (a tombstone, final).
    DELETION_SCHEDULED = "DELETION_SCHEDULED"
    DELETING = "DELETING"
    DELETION_ERROR = "DELETION_ERROR"
    DELETED = "DELETED"
    # Its storage is being moved to another server (tenant's `move`); ACTIVE again once
    # switched or rolled back. Neither deletable nor retried nor restored meanwhile.
    MOVING = "MOVING"


class MigrationStatus(StrEnum):
    """State of one downstream service's migrations for one tenant."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


# The statuses a tenant may be deleted from: every one but the deletion statuses and MOVING
# (a move ends first: DELETE answers 409 "a move is under way").
DELETABLE = frozenset(
    {
        TenantStatus.PROVISIONING,
        TenantStatus.MIGRATING,
        TenantStatus.ACTIVE,
        TenantStatus.PROVISION_ERROR,
        TenantStatus.MIGRATION_ERROR,
    }
)
DELETION_STATUSES = frozenset(
    {
        TenantStatus.DELETION_SCHEDULED,
        TenantStatus.DELETING,
        TenantStatus.DELETION_ERROR,
        TenantStatus.DELETED,
    }
)
# What restore may return a tenant to: the status it had when its deletion was scheduled. An
# open provisioning run is cancelled before that, which leaves PROVISION_ERROR or
# MIGRATION_ERROR (each with its retry), never PROVISIONING or MIGRATING.
RESTORABLE = frozenset(
    {TenantStatus.ACTIVE, TenantStatus.PROVISION_ERROR, TenantStatus.MIGRATION_ERROR}
)

# Target -> the only states it may be entered from. Anything else (a late or repeated activity,
# an operator racing the workflow) is refused, so a tenant never moves backwards.
ALLOWED_SOURCES: dict[TenantStatus, frozenset[TenantStatus]] = {
    # A new run that adopts a failed provisioning starts it over (retry-provisioning).
    TenantStatus.PROVISIONING: frozenset({TenantStatus.PROVISION_ERROR}),
    TenantStatus.MIGRATING: frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATION_ERROR}),
    # From DELETION_SCHEDULED: restore (only to the status recorded when it was scheduled);
    # from MOVING: the move switched or rolled back (only a move's own write, see `decide`).
    TenantStatus.ACTIVE: frozenset(
        {TenantStatus.MIGRATING, TenantStatus.DELETION_SCHEDULED, TenantStatus.MOVING}
    ),
    TenantStatus.PROVISION_ERROR: frozenset(
        {TenantStatus.PROVISIONING, TenantStatus.DELETION_SCHEDULED}
    ),
    TenantStatus.MIGRATION_ERROR: frozenset(
        {TenantStatus.MIGRATING, TenantStatus.DELETION_SCHEDULED}
    ),
    TenantStatus.DELETION_SCHEDULED: DELETABLE,
    # The grace period is over, or retry-deletion resumes a failed purge.
    TenantStatus.DELETING: frozenset(
        {TenantStatus.DELETION_SCHEDULED, TenantStatus.DELETION_ERROR}
    ),
    TenantStatus.DELETION_ERROR: frozenset({TenantStatus.DELETING}),
    # Nothing leaves DELETED: no status lists it as a source.
    TenantStatus.DELETED: frozenset({TenantStatus.DELETING}),
    TenantStatus.MOVING: frozenset({TenantStatus.ACTIVE}),
}


def can_transition(source: TenantStatus, target: TenantStatus) -> bool:
    """True when the status machine allows `source -> target`."""
    return source in ALLOWED_SOURCES[target]


class Decision(Enum):
    """What a guarded transition does, given the tenant's current status."""

    APPLY = "apply"
    NO_OP = "no-op"
    REFUSE = "refuse"


def is_restore(source: TenantStatus | None, target: TenantStatus) -> bool:
    """True for the edges that only restore may take: out of DELETION_SCHEDULED, back to a
    status of the tenant's life before its deletion was asked."""
    return source is TenantStatus.DELETION_SCHEDULED and target in RESTORABLE


def is_move(source: TenantStatus | None, target: TenantStatus) -> bool:
    """True for the edges that only a move's own writes may take: into MOVING, out of it."""
    return TenantStatus.MOVING in (source, target)


def decide(
    current: TenantStatus | None,
    target: TenantStatus,
    *,
    restoring: bool = False,
    moving: bool = False,
) -> Decision:
    """The guarded transition's rule: a repeat is a no-op (a retried or late activity), an
    allowed source applies, anything else (no row, a move backwards) is refused. A restore
    edge applies only to a restore (`restoring`), so a late provisioning step can never take a
    tenant out of its deletion; a restore applies only along a restore edge. Likewise a move
    edge applies only to a move's write (`moving`: begin, switch, roll back), so a late
    provisioning step asking for ACTIVE never ends a move, and a move takes no other edge."""
    if current is target:
        return Decision.NO_OP
    if current is None or current not in ALLOWED_SOURCES[target]:
        return Decision.REFUSE
    if is_restore(current, target) is not restoring:
        return Decision.REFUSE
    if is_move(current, target) is not moving:
        return Decision.REFUSE
    return Decision.APPLY
