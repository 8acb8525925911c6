"""How clients start `ProvisionTenantWorkflow`, by name, importing no workflow or activity
code: one id rule and one set of policies for the API's create and retries and for the
reconciler's restarts.

A workflow id is the tenant's business id. A new run may start only when no run is open
(conflict policy FAIL) and the last run did not complete (reuse policy FAILED_ONLY): a
completed run means an ACTIVE tenant, never provisioned twice. Whether the new run may take
the tenant over is decided by compare-and-set on the row's owning run (the API's insert for a
POST, the run's own first step), so a POST for an existing id is refused (409) and only an
adopting run naming the row's owner gets it.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from infra import search_attributes as sa
from tenancy.contracts import AdoptRun
from tenancy.models import Tenant, TenantSpec
from tenancy.naming import provision_workflow_id
from workflows.provision.contracts import WORKFLOW_NAME, ProvisionInput, ProvisionState

_POLICIES: dict[str, Any] = {
    "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
    "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
}


def identity(spec: TenantSpec) -> TypedSearchAttributes:
    """The search attributes a run is started with: which tenant, tier and storage mode. Its
    `TenantStatus` is set by the run itself once it owns the row."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.TENANT_ID, spec.id),
            SearchAttributePair(sa.SLA_TIER, spec.sla_tier.value),
            SearchAttributePair(sa.STORAGE_MODE, spec.storage_mode.value),
        ]
    )


def adoption(tenant: Tenant, actor: str, reason: str) -> ProvisionInput:
    """Input of a run that takes `tenant` over from the run its row names."""
    if tenant.workflow_run_id is None:
        raise ValueError(f"tenant {tenant.id} names no owning run")
    return ProvisionInput(
        spec=TenantSpec(
            id=tenant.id,
            name=tenant.name,
            storage_mode=tenant.storage_mode,
            sla_tier=tenant.sla_tier,
        ),
        requested_by=tenant.created_by,
        adopt=AdoptRun(replaces_run_id=tenant.workflow_run_id, actor=actor, reason=reason),
    )


# Memo key naming the request that started a run, so a client that timed out can tell
# whether its own start was accepted.
START_REQUEST_MEMO = "startRequest"


def start_operation(
    request: ProvisionInput, task_queue: str, start_request: str
) -> WithStartWorkflowOperation[Any, ProvisionState]:
    """The start half of update-with-start (the API waits for `tenant_recorded`)."""
    return WithStartWorkflowOperation(
        WORKFLOW_NAME,
        request,
        result_type=ProvisionState,
        id=provision_workflow_id(request.spec.id),
        task_queue=task_queue,
        memo={START_REQUEST_MEMO: start_request},
        search_attributes=identity(request.spec),
        **_POLICIES,
    )


async def start(
    client: Client, request: ProvisionInput, task_queue: str, start_request: str | None = None
) -> WorkflowHandle[Any, ProvisionState]:
    """Start a run without waiting for it (the API's create, the reconciler's restart), named
    `start_request` in its memo when given; `WorkflowAlreadyStartedError` when the id is taken."""
    return await client.start_workflow(
        WORKFLOW_NAME,
        request,
        result_type=ProvisionState,
        id=provision_workflow_id(request.spec.id),
        task_queue=task_queue,
        search_attributes=identity(request.spec),
        memo={START_REQUEST_MEMO: start_request} if start_request is not None else None,
        **_POLICIES,
    )
