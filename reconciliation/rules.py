"""What the reconciler expects of each workflow type: which tenant statuses it governs, in which
of them a run of it must be open, which of them it restarts, and how it is restarted.

A tenant's status picks its rules, so one tenant is checked against exactly one workflow:
the one that should be moving it (or holding it) now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from tenancy.models import CamelModel, Tenant
from tenancy.naming import deletion_workflow_id, provision_workflow_id
from tenancy.status import DELETION_STATUSES, TenantStatus
from workflows.delete import contracts as deletion
from workflows.delete import starts as deletion_starts
from workflows.move import contracts as move
from workflows.move import starts as move_starts
from workflows.provision import contracts as provision
from workflows.provision import starts as provision_starts


class LiveState(Protocol):
    """What a workflow's status query answers, as far as the reconciler reads it."""

    @property
    def status(self) -> TenantStatus | None:
        """The status the run believes the tenant is in."""
        ...


# Restart(client, tenant, actor, task_queue) -> whether a new run was started.
Restart = Callable[[Client, Tenant, str, str], Awaitable[bool]]


def _never_asked(tenant: Tenant) -> datetime | None:
    return None


@dataclass(frozen=True)
class WorkflowRules:
    """One workflow type's expectations (see the module docstring)."""

    workflow_type: str
    workflow_id: Callable[[str], str]
    # Every status this workflow is responsible for.
    governs: frozenset[TenantStatus]
    # Statuses in which a run must be open; a tenant in one without it is stuck.
    needs_run: frozenset[TenantStatus]
    # Of those, the statuses the reconciler's repair restarts.
    restartable: frozenset[TenantStatus]
    # Statuses a completed run may leave the row in.
    completes_in: frozenset[TenantStatus]
    # The query answering the live state (a model with a `status` field) and its type.
    status_query: str
    state_type: type[LiveState]
    restart: Restart
    # When the row asked for a run that its writer starts a moment after (a move: the API);
    # None when the run writes the row itself. The reconciler leaves such a run to its writer
    # for a while: both starting it, the writer's start would fail and it would undo the row.
    asked_at: Callable[[Tenant], datetime | None] = _never_asked

    @property
    def settled(self) -> frozenset[TenantStatus]:
        """Statuses in which a running workflow is worth asking for its live state."""
        return self.governs - self.needs_run


async def _restart_provisioning(
    client: Client, tenant: Tenant, actor: str, task_queue: str
) -> bool:
    # The new run takes the row over only while the closed run still owns it, so a tenant
    # that moved meanwhile is left alone; an open run makes the start fail.
    if tenant.workflow_run_id is None:
        return False
    try:
        await provision_starts.start(
            client, provision_starts.adoption(tenant, actor, "reconciler restart"), task_queue
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


PROVISIONING = WorkflowRules(
    workflow_type=provision.WORKFLOW_NAME,
    workflow_id=provision_workflow_id,
    governs=frozenset(
        {
            TenantStatus.PROVISIONING,
            TenantStatus.MIGRATING,
            TenantStatus.MIGRATION_ERROR,
            TenantStatus.ACTIVE,
            TenantStatus.PROVISION_ERROR,
        }
    ),
    needs_run=frozenset(
        {TenantStatus.PROVISIONING, TenantStatus.MIGRATING, TenantStatus.MIGRATION_ERROR}
    ),
    restartable=frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATING}),
    completes_in=frozenset({TenantStatus.ACTIVE}),
    status_query=provision.STATUS_QUERY,
    state_type=provision.ProvisionState,
    restart=_restart_provisioning,
)


async def _resume_deletion(client: Client, tenant: Tenant, actor: str, task_queue: str) -> bool:
    # The new run reads where the deletion stands from the row and carries on: the rest of the
    # grace period, the purge, or the wait for retry-deletion in DELETION_ERROR.
    try:
        await deletion_starts.start(
            client, deletion_starts.resumption(tenant.id, actor, retry=False), task_queue
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


DELETION = WorkflowRules(
    workflow_type=deletion.WORKFLOW_NAME,
    workflow_id=deletion_workflow_id,
    governs=DELETION_STATUSES,
    needs_run=DELETION_STATUSES - {TenantStatus.DELETED},
    restartable=DELETION_STATUSES - {TenantStatus.DELETED},
    completes_in=frozenset({TenantStatus.DELETED}),
    status_query=deletion.STATUS_QUERY,
    state_type=deletion.DeletionState,
    restart=_resume_deletion,
)


class _MoveLiveState(CamelModel):
    """The status a move run would report; never asked (MOVING always needs its run)."""

    status: TenantStatus | None = None


async def _resume_move(client: Client, tenant: Tenant, actor: str, task_queue: str) -> bool:
    # The new run reads the move on the row and carries on: every step before the switch again
    # from PREPARING (each is idempotent), or the switch alone once the row says SWITCHED.
    try:
        await move_starts.start(client, tenant.id, actor, task_queue)
    except WorkflowAlreadyStartedError:
        return False
    return True


MOVE = WorkflowRules(
    workflow_type=move.WORKFLOW_NAME,
    workflow_id=move.move_workflow_id,
    governs=frozenset({TenantStatus.MOVING}),
    needs_run=frozenset({TenantStatus.MOVING}),
    restartable=frozenset({TenantStatus.MOVING}),
    completes_in=frozenset({TenantStatus.ACTIVE}),
    status_query=move.STATUS_QUERY,
    state_type=_MoveLiveState,
    restart=_resume_move,
    asked_at=lambda tenant: tenant.move.requested_at if tenant.move else None,
)

ALL_RULES: tuple[WorkflowRules, ...] = (PROVISIONING, DELETION, MOVE)


def rules_for(status: TenantStatus, rules: tuple[WorkflowRules, ...] = ALL_RULES) -> WorkflowRules:
    """The rules of the workflow that governs `status`."""
    for candidate in rules:
        if status in candidate.governs:
            return candidate
    raise LookupError(f"no workflow governs {status}")
