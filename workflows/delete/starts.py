"""How clients start `DeleteTenantWorkflow`, by name, importing no workflow or activity code.

One deletion of a tenant is open at a time (conflict policy FAIL: of racing DELETEs one starts
the run and the others are refused). The id may be used again once the run closed (reuse policy
ALLOW_DUPLICATE): a tenant restored from one deletion can be deleted again later, and a lost or
failed run can be resumed by a new one. A new run for a tenant whose deletion was already asked
is refused by its first step (the row's status), so no deletion is ever asked twice.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from tenancy.naming import deletion_workflow_id
from workflows.delete.contracts import WORKFLOW_NAME, DeleteInput, DeletionState, ResumeDeletion

_POLICIES: dict[str, Any] = {
    "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
    "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
}


def start_operation(
    request: DeleteInput, task_queue: str
) -> WithStartWorkflowOperation[Any, DeletionState]:
    """The start half of update-with-start (the API waits for `deletion_scheduled`)."""
    return WithStartWorkflowOperation(
        WORKFLOW_NAME,
        request,
        result_type=DeletionState,
        id=deletion_workflow_id(request.tenant_id),
        task_queue=task_queue,
        **_POLICIES,
    )


def resumption(tenant_id: str, actor: str, *, retry: bool) -> DeleteInput:
    """Input of a run that takes over the deletion recorded on the tenant's row."""
    return DeleteInput(
        tenant_id=tenant_id,
        requested_by=actor,
        resume=ResumeDeletion(actor=actor, retry=retry),
    )


async def start(
    client: Client, request: DeleteInput, task_queue: str
) -> WorkflowHandle[Any, DeletionState]:
    """Start a run without waiting for it (retry-deletion of a closed run, the reconciler)."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        request,
        result_type=DeletionState,
        id=deletion_workflow_id(request.tenant_id),
        task_queue=task_queue,
        **_POLICIES,
    )
