"""How clients start `MoveTenantWorkflow`, by name, importing no workflow or activity code: the
API when it records a move, the reconciler when a MOVING tenant's run is gone.

One run of a tenant's move is open at a time (conflict policy FAIL); the id may be used again
once a run closed (reuse policy ALLOW_DUPLICATE): the tenant's next move, or a run started again
for a move whose run was lost, which reads the move on the row and carries on.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from infra import search_attributes as sa
from workflows.move.contracts import WORKFLOW_NAME, MoveInput, MoveState, move_workflow_id


async def start(
    client: Client, tenant_id: str, actor: str, task_queue: str
) -> WorkflowHandle[Any, MoveState]:
    """Start a run of the tenant's move without waiting for it; `WorkflowAlreadyStartedError`
    while one is open."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        MoveInput(tenant_id=tenant_id, requested_by=actor),
        result_type=MoveState,
        id=move_workflow_id(tenant_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.TENANT_ID, tenant_id)]),
    )
