"""The API's only door to Temporal: start a provisioning, retry one, adopt a closed run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ServiceUnavailable, StatusConflict, TenantConflict
from tenancy.failures import FailureType
from tenancy.models import Tenant, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import Settings
from workflows.provision import starts
from workflows.provision.contracts import (
    RECORDED_UPDATE,
    RETRY_UPDATE,
    ProvisionInput,
    ProvisionState,
    RetryDecision,
    RetryRequest,
)

# How long a POST that timed out spends asking Temporal whether its start was accepted.
_CONFIRM_TIMEOUT = timedelta(seconds=2)


async def _consume_start_failure(start: WithStartWorkflowOperation[Any, Any]) -> None:
    # The start operation holds its own future with the same failure; reading it keeps
    # asyncio from logging "exception was never retrieved".
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(start.workflow_handle(), timeout=0.1)


class ProvisioningGateway:
    """Starts, retries and adopts `ProvisionTenantWorkflow` runs."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def start(self, spec: TenantSpec, requested_by: str | None = None) -> ProvisionState:
        """Start the workflow and wait until it has recorded the tenant row.

        The workflow id is the tenant id; an open run is never replaced and an existing row
        is never taken over, so of any number of racing requests exactly one creates a tenant.
        """
        return await self._start_recorded(ProvisionInput(spec=spec, requested_by=requested_by))

    async def adopt(self, tenant: Tenant, actor: str, reason: str) -> ProvisionState:
        """Start a new run that takes `tenant` over from its closed run, and wait until it has.

        409 when a run of the tenant is open or another run took the tenant over first.
        """
        return await self._start_recorded(starts.adoption(tenant, actor, reason))

    async def request_retry(self, tenant_id: str, requested_by: str) -> RetryDecision | None:
        """Ask the open run to retry its failed migrations; None when no run is open."""
        handle = self._client.get_workflow_handle(provision_workflow_id(tenant_id))
        try:
            return await asyncio.wait_for(
                handle.execute_update(
                    RETRY_UPDATE,
                    RetryRequest(requested_by=requested_by),
                    result_type=RetryDecision,
                ),
                timeout=self._settings.create_timeout.total_seconds(),
            )
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise ServiceUnavailable(
                f"the workflow of {tenant_id} did not answer the retry request in time; "
                "is a worker running?"
            ) from None

    async def _start_recorded(self, request: ProvisionInput) -> ProvisionState:
        tenant_id = request.spec.id
        start_request = uuid.uuid4().hex
        start = starts.start_operation(request, self._settings.task_queue, start_request)
        try:
            return await asyncio.wait_for(
                self._client.execute_update_with_start_workflow(
                    RECORDED_UPDATE, start_workflow_operation=start, result_type=ProvisionState
                ),
                timeout=self._settings.create_timeout.total_seconds(),
            )
        except WorkflowAlreadyStartedError:
            await _consume_start_failure(start)
            if request.adopt is not None:
                raise StatusConflict(
                    f"a run of tenant {tenant_id} is already under way",
                    tenantId=tenant_id,
                ) from None
            raise TenantConflict(f"tenant {tenant_id} already exists") from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == FailureType.TENANT_EXISTS:
                if request.adopt is not None:
                    raise StatusConflict(
                        f"tenant {tenant_id} was taken over by another run", tenantId=tenant_id
                    ) from None
                raise TenantConflict(f"tenant {tenant_id} already exists") from None
            raise
        # Cancelling the update's long poll surfaces as the SDK's own error, not TimeoutError.
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            await _consume_start_failure(start)
            if await self._started_by(tenant_id, start_request):
                raise ServiceUnavailable(
                    f"provisioning of {tenant_id} was accepted by Temporal but its record is "
                    "not written yet; GET the tenant later",
                ) from None
            raise ServiceUnavailable(
                f"Temporal did not confirm the start of {tenant_id} in time; send the request "
                "again (an id that did start answers 409)"
            ) from None
        except RPCError as exc:
            await _consume_start_failure(start)
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    async def _started_by(self, tenant_id: str, start_request: str) -> bool:
        """Whether the tenant's latest run was started by `start_request`: the update's wait
        hides whether the start itself went through."""
        handle = self._client.get_workflow_handle(provision_workflow_id(tenant_id))
        try:
            description = await asyncio.wait_for(
                handle.describe(), timeout=_CONFIRM_TIMEOUT.total_seconds()
            )
            memo = await description.memo_value(starts.START_REQUEST_MEMO, default=None)
        except (RPCError, TimeoutError):
            return False
        return bool(memo == start_request)
