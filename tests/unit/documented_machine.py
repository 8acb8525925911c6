"""The status machine as ARCHITECTURE.md draws it, copied by hand (never read from
`tenancy.status.ALLOWED_SOURCES`), so a change to the code that breaks the documented machine
fails the status tests."""

from __future__ import annotations

from tenancy.status import TenantStatus

S = TenantStatus

# The statuses of a tenant's life before its deletion, and the deletion statuses.
LIFE = frozenset({S.PROVISIONING, S.MIGRATING, S.ACTIVE, S.PROVISION_ERROR, S.MIGRATION_ERROR})
DELETION = frozenset({S.DELETION_SCHEDULED, S.DELETING, S.DELETION_ERROR, S.DELETED})
# Straight from the diagram; every other pair must be refused.
FORWARD = frozenset(
    {
        (S.PROVISIONING, S.MIGRATING),
        (S.PROVISIONING, S.PROVISION_ERROR),
        (S.MIGRATING, S.ACTIVE),
        (S.MIGRATING, S.MIGRATION_ERROR),
        (S.MIGRATION_ERROR, S.MIGRATING),
        # retry-provisioning: a new run adopts the tenant and starts over.
        (S.PROVISION_ERROR, S.PROVISIONING),
        # DELETE: any status but the deletion ones.
        *((status, S.DELETION_SCHEDULED) for status in LIFE),
        # The grace period is over; the purge fails; retry-deletion resumes it; it ends.
        (S.DELETION_SCHEDULED, S.DELETING),
        (S.DELETING, S.DELETION_ERROR),
        (S.DELETION_ERROR, S.DELETING),
        (S.DELETING, S.DELETED),
    }
)
# restore: back to the status before the deletion (a stopped provisioning run left
# PROVISION_ERROR or MIGRATION_ERROR); only a restore takes these, and a restore nothing else.
RESTORE = frozenset(
    {
        (S.DELETION_SCHEDULED, S.ACTIVE),
        (S.DELETION_SCHEDULED, S.PROVISION_ERROR),
        (S.DELETION_SCHEDULED, S.MIGRATION_ERROR),
    }
)
# A move (ACTIVE -> MOVING -> ACTIVE): taken only by a move's own writes (begin, switch, roll
# back), never by a transition, and a move takes nothing else. MOVING is no deletion status and
# is not deletable (DELETE answers 409 "a move is under way").
MOVE = frozenset({(S.ACTIVE, S.MOVING), (S.MOVING, S.ACTIVE)})
DOCUMENTED = FORWARD | RESTORE | MOVE
