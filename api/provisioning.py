"""The API's only door to Temporal: start a provisioning, signal a retry."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.errors import ServiceUnavailable, TenantConflict
from tenancy.contracts import ProvisionInput, TenantState
from tenancy.failures import FailureType
from tenancy.models import TenantSpec
from tenancy.naming import workflow_id
from tenancy.settings import Settings
from workflows.provision import RECORDED_UPDATE, ProvisionTenantWorkflow


async def _consume_start_failure(start: WithStartWorkflowOperation[Any, Any]) -> None:
    # The start operation holds its own future with the same failure; reading it keeps
    # asyncio from logging "exception was never retrieved" on every 409.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(start.workflow_handle(), timeout=0.1)


class ProvisioningGateway:
    """Starts and signals `ProvisionTenantWorkflow` runs."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def start(self, spec: TenantSpec, requested_by: str | None = None) -> TenantState:
        """Start the workflow and wait until it has recorded the tenant row.

        The workflow id is the tenant id, and an existing run (running or closed) is never
        replaced, so of any number of racing requests exactly one starts a workflow.
        """
        start = WithStartWorkflowOperation(
            ProvisionTenantWorkflow.run,
            ProvisionInput(spec=spec, requested_by=requested_by),
            id=workflow_id(spec.id),
            task_queue=self._settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        try:
            return await asyncio.wait_for(
                self._client.execute_update_with_start_workflow(
                    RECORDED_UPDATE, start_workflow_operation=start, result_type=TenantState
                ),
                timeout=self._settings.create_timeout.total_seconds(),
            )
        except WorkflowAlreadyStartedError:
            await _consume_start_failure(start)
            raise TenantConflict(f"tenant {spec.id} already exists") from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == FailureType.TENANT_EXISTS:
                raise TenantConflict(f"tenant {spec.id} already exists") from None
            raise
        # Cancelling the update's long poll surfaces as the SDK's own error, not TimeoutError.
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise ServiceUnavailable(
                f"provisioning of {spec.id} was accepted by Temporal but its record is not "
                "written yet; GET the tenant later",
            ) from None
        except RPCError as exc:
            await _consume_start_failure(start)
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    async def request_retry(self, tenant_id: str) -> None:
        """Send `retry_migration` to the tenant's workflow."""
        handle = self._client.get_workflow_handle(workflow_id(tenant_id))
        try:
            await handle.signal(ProvisionTenantWorkflow.retry_migration)
        except RPCError as exc:
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
