"""The API's only door to Temporal: start, signal, update, cancel and query any workflow by its
name, and the provisioning operations built on them. No workflow or activity code is imported:
each workflow's package gives its name, input model and id rule (`workflows.<name>.contracts`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, Literal, TypeVar

import psycopg
from psycopg_pool import PoolTimeout
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowContinuedAsNewError,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ServiceUnavailable, StatusConflict, TenantConflict, TenantNotFound
from infra.db.repository import TenantOwnedElsewhere, TenantRepository
from tenancy.failures import FailureType
from tenancy.models import Tenant, TenantSpec
from tenancy.naming import deletion_workflow_id, provision_workflow_id
from tenancy.settings import Settings
from workflows.delete import contracts as deletion
from workflows.delete import starts as deletion_starts
from workflows.drain import contracts as drain
from workflows.move import contracts as move
from workflows.move import starts as move_starts
from workflows.provision import starts
from workflows.provision.contracts import (
    RECORDED_UPDATE,
    RETRY_UPDATE,
    ProvisionInput,
    ProvisionState,
    RetryDecision,
    RetryRequest,
)
from workflows.rollout import starts as rollout_starts
from workflows.rollout.contracts import RolloutInput, rollout_workflow_id

# How long a POST that timed out spends asking Temporal whether its start was accepted.
_CONFIRM_TIMEOUT = timedelta(seconds=2)
# Errors that may come back while the server still commits the start (a deadline, a cancel, a
# connection lost, the SDK's retries of an unavailable server spent): a missing run then proves
# nothing, and the row is left to the reconciler.
_UNSETTLED = frozenset(
    {
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.UNKNOWN,
    }
)


async def _consume_start_failure(start: WithStartWorkflowOperation[Any, Any]) -> None:
    # The start operation holds its own future with the same failure; reading it keeps
    # asyncio from logging "exception was never retrieved".
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(start.workflow_handle(), timeout=0.1)


def _accepted(tenant_id: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"provisioning of {tenant_id} was accepted by Temporal but its record is "
        "not written yet; GET the tenant later",
    )


def _unconfirmed(tenant_id: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Temporal did not confirm the start of {tenant_id} in time; send the request "
        "again (an id that did start answers 409)"
    )


ResultT = TypeVar("ResultT")


class MoveRunOpen(StatusConflict):
    """A run of the tenant's move is still open (the last one ending): no second one starts."""


class MoveRunNotStarted(ServiceUnavailable):
    """Temporal answered that it did not start the move's run (not a lost answer)."""


class DrainRunOpen(StatusConflict):
    """A run of the server's drain is still open (the last one ending): no second one starts."""


class DrainRunNotStarted(ServiceUnavailable):
    """Temporal answered that it did not start the drain's run (not a lost answer)."""


class RolloutRunNotStarted(ServiceUnavailable):
    """Temporal did not start the rollout's run (it says no run of this start exists)."""


class WorkflowGateway:
    """Starts, signals, updates, cancels and queries workflows; Temporal being unreachable is a
    503 (`ServiceUnavailable`), a workflow with no open run answers None/False."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """The API's settings (deletion grace period, timeouts)."""
        return self._settings

    @property
    def _timeout(self) -> float:
        return self._settings.create_timeout.total_seconds()

    async def signal(self, workflow_id: str, signal: str, arg: Any = None) -> bool:
        """Send `signal` to the open run of `workflow_id`; False when no run is open."""
        handle = self._client.get_workflow_handle(workflow_id)
        args = [] if arg is None else [arg]
        found, _ = await self._call(handle.signal(signal, args=args))
        return found

    async def cancel(self, workflow_id: str) -> bool:
        """Ask the open run of `workflow_id` to cancel; False when no run is open."""
        handle = self._client.get_workflow_handle(workflow_id)
        found, _ = await self._call(handle.cancel())
        return found

    async def query(
        self, workflow_id: str, query: str, result_type: type[ResultT]
    ) -> ResultT | None:
        """The answer of `query` from the latest run of `workflow_id`; None when there is none."""
        handle = self._client.get_workflow_handle(workflow_id)
        _, answer = await self._call(handle.query(query, result_type=result_type))
        return answer

    async def update(
        self, workflow_id: str, update: str, arg: Any, result_type: type[ResultT]
    ) -> ResultT | None:
        """Run `update` on the open run of `workflow_id`; None when no run is open."""
        handle = self._client.get_workflow_handle(workflow_id)
        _, answer = await self._call(handle.execute_update(update, arg, result_type=result_type))
        return answer

    async def _call(self, call: Awaitable[ResultT]) -> tuple[bool, ResultT | None]:
        """Await a call on a workflow handle: (True, its result), or (False, None) when the
        workflow has no such run; 503 when Temporal or the workflow does not answer in time."""
        try:
            return True, await asyncio.wait_for(call, timeout=self._timeout)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return False, None
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise ServiceUnavailable(
                "Temporal or the workflow did not answer in time; is a worker running?"
            ) from None

    async def create(
        self, spec: TenantSpec, tenants: TenantRepository, requested_by: str | None = None
    ) -> Tenant:
        """Start provisioning a new tenant and write its row here, without waiting on a worker.

        The row is inserted with the started run's id by the insert the run's own first step
        makes, idempotent by run id: whichever comes first writes it, the other finds it (the
        run adds its plan's migrations). The workflow id is the tenant id, an open run is never
        replaced and an existing row never taken over, so of any number of racing requests
        exactly one creates a tenant; the others get 409.
        """
        run_id = await self._start_new(ProvisionInput(spec=spec, requested_by=requested_by))
        try:
            return await tenants.insert(
                spec, provision_workflow_id(spec.id), run_id, services=(), created_by=requested_by
            )
        except TenantOwnedElsewhere:
            # An earlier run of the id ended without completing and left its row: the new run
            # is refused it at its own record step and fails.
            raise TenantConflict(f"tenant {spec.id} already exists") from None
        except (psycopg.OperationalError, PoolTimeout):
            raise _accepted(spec.id) from None

    async def provision(self, spec: TenantSpec, requested_by: str | None = None) -> ProvisionState:
        """Start the workflow and wait until its run has recorded the tenant row (a worker
        must take the run; the API's POST uses `create`, which does not wait for one).

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
        return await self.update(
            provision_workflow_id(tenant_id),
            RETRY_UPDATE,
            RetryRequest(requested_by=requested_by),
            RetryDecision,
        )

    async def schedule_deletion(
        self, tenant_id: str, requested_by: str, reason: str | None, grace_seconds: int
    ) -> deletion.DeletionState:
        """Start the tenant's deletion and wait until it is recorded (DELETION_SCHEDULED): its
        provisioning run, if open, is cancelled first. Of racing requests one is taken; 409 for
        the others and for a tenant whose deletion was already asked."""
        request = deletion.DeleteInput(
            tenant_id=tenant_id,
            requested_by=requested_by,
            reason=reason,
            grace_seconds=grace_seconds,
        )
        start = deletion_starts.start_operation(request, self._settings.task_queue)
        try:
            return await asyncio.wait_for(
                self._client.execute_update_with_start_workflow(
                    deletion.SCHEDULED_UPDATE,
                    start_workflow_operation=start,
                    result_type=deletion.DeletionState,
                ),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            await _consume_start_failure(start)
            raise StatusConflict(
                f"a deletion of tenant {tenant_id} is already under way", tenantId=tenant_id
            ) from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                if cause.type == FailureType.TENANT_NOT_FOUND:
                    raise TenantNotFound(f"no tenant {tenant_id}") from None
                if cause.type == FailureType.DELETION_CONFLICT:
                    raise StatusConflict(cause.message, tenantId=tenant_id) from None
            raise
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            await _consume_start_failure(start)
            raise ServiceUnavailable(
                f"the deletion of {tenant_id} was not confirmed in time; GET the tenant to see "
                "whether it is DELETION_SCHEDULED (a request sent again answers 409 if it is)"
            ) from None
        except RPCError as exc:
            await _consume_start_failure(start)
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    async def cancel_deletion(self, tenant_id: str, requested_by: str, reason: str | None) -> bool:
        """Send `cancel_deletion` (restore) to the open deletion run; False when none is open."""
        return await self.signal(
            deletion_workflow_id(tenant_id),
            deletion.CANCEL_SIGNAL,
            deletion.CancelDeletion(requested_by=requested_by, reason=reason),
        )

    async def request_deletion_retry(
        self, tenant_id: str, requested_by: str
    ) -> RetryDecision | None:
        """Ask the open deletion run to resume its failed purge; None when no run is open."""
        return await self.update(
            deletion_workflow_id(tenant_id),
            deletion.RETRY_UPDATE,
            RetryRequest(requested_by=requested_by),
            RetryDecision,
        )

    async def resume_deletion(self, tenant_id: str, actor: str, *, retry: bool) -> None:
        """Start a run that takes over the deletion recorded on the row (its run is closed);
        409 when a deletion run is open."""
        try:
            await asyncio.wait_for(
                deletion_starts.start(
                    self._client,
                    deletion_starts.resumption(tenant_id, actor, retry=retry),
                    self._settings.task_queue,
                ),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            raise StatusConflict(
                f"a deletion run of tenant {tenant_id} is already under way", tenantId=tenant_id
            ) from None
        except (RPCError, TimeoutError) as exc:
            raise ServiceUnavailable(f"Temporal is unavailable: {exc}") from None

    async def start_move(self, tenant_id: str, actor: str) -> None:
        """Start the tenant's `MoveTenantWorkflow` (the move is on its row already). Never a
        second run while one is open (conflict policy FAIL: `MoveRunOpen`); a closed run does
        not stop a new move (reuse policy ALLOW_DUPLICATE). `MoveRunNotStarted` when Temporal
        answered an error, `ServiceUnavailable` when its answer was lost (the start may still
        be committed: the reconciler starts a MOVING tenant's missing run again)."""
        try:
            await asyncio.wait_for(
                move_starts.start(self._client, tenant_id, actor, self._settings.task_queue),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            raise MoveRunOpen(
                f"a run of tenant {tenant_id}'s move is still open; try again when it ends",
                tenantId=tenant_id,
            ) from None
        except RPCError as exc:
            if exc.status in _UNSETTLED:
                raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
            raise MoveRunNotStarted(
                f"Temporal did not start tenant {tenant_id}'s move: {exc.message}"
            ) from None
        except TimeoutError:
            raise ServiceUnavailable(
                f"Temporal did not confirm the start of tenant {tenant_id}'s move in time"
            ) from None

    async def cancel_move(self, tenant_id: str, actor: str) -> move.CancelDecision | None:
        """Ask the open run of the tenant's move to roll it back: whether it will (not once
        its switch has begun), or None when no run is open."""
        return await self.update(
            move.move_workflow_id(tenant_id),
            move.CANCEL_UPDATE,
            move.CancelMove(requested_by=actor),
            move.CancelDecision,
        )

    async def start_drain(self, request: drain.DrainInput) -> None:
        """Start the server's `DrainServerWorkflow` (the server is DRAINING on its row
        already). Never a second run while one is open (`DrainRunOpen`); a closed run does not
        stop a new drain. `DrainRunNotStarted` when Temporal answered an error,
        `ServiceUnavailable` when its answer was lost."""
        try:
            await asyncio.wait_for(
                self._client.start_workflow(
                    drain.WORKFLOW_NAME,
                    request,
                    id=drain.drain_workflow_id(request.server),
                    task_queue=self._settings.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                ),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            raise DrainRunOpen(
                f"a run of storage server {request.server}'s drain is still open; try again "
                "when it ends",
                server=request.server,
            ) from None
        except RPCError as exc:
            if exc.status in _UNSETTLED:
                raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
            raise DrainRunNotStarted(
                f"Temporal did not start storage server {request.server}'s drain: {exc.message}"
            ) from None
        except TimeoutError:
            raise ServiceUnavailable(
                f"Temporal did not confirm the start of {request.server}'s drain in time"
            ) from None

    async def cancel_drain(self, server: str, actor: str) -> bool:
        """Tell the open run of the server's drain to start no further move; False when no
        run is open."""
        return await self.signal(
            drain.drain_workflow_id(server),
            drain.CANCEL_SIGNAL,
            drain.CancelDrain(requested_by=actor),
        )

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
                raise _accepted(tenant_id) from None
            raise _unconfirmed(tenant_id) from None
        except RPCError as exc:
            await _consume_start_failure(start)
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None

    async def _start_new(self, request: ProvisionInput) -> str:
        """Start a run for a new tenant; its run id. When the answer is lost (an `RPCError` or
        a timeout after the request was sent) Temporal is asked whether this start's run
        exists: its id when it does, 503 otherwise (saying whether to send the request again)."""
        tenant_id = request.spec.id
        start_request = uuid.uuid4().hex
        try:
            handle = await asyncio.wait_for(
                starts.start(self._client, request, self._settings.task_queue, start_request),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            raise TenantConflict(f"tenant {tenant_id} already exists") from None
        except (RPCError, TimeoutError) as exc:
            # Only an error the server (or the SDK, after its own retries) answered makes a
            # missing run mean "not started": a start given up on may still be committing.
            answered = isinstance(exc, RPCError) and exc.status not in _UNSETTLED
            started = await self._run_started_by(tenant_id, start_request, answered)
            if isinstance(started, str):
                return started
            reason = exc.message if isinstance(exc, RPCError) else None
            if started is False:
                raise ServiceUnavailable(
                    f"Temporal did not start the provisioning of {tenant_id} "
                    f"({reason or 'no answer in time'}); send the request again"
                ) from None
            if reason is not None:
                raise ServiceUnavailable(f"Temporal is unavailable: {reason}") from None
            raise _unconfirmed(tenant_id) from None
        # A handle from `start_workflow` always names the run it started.
        assert handle.result_run_id is not None
        return handle.result_run_id

    async def _started_by(self, tenant_id: str, start_request: str) -> bool:
        """Whether the tenant's latest run was started by `start_request`: the update's wait
        hides whether the start itself went through."""
        started = await self._run_started_by(tenant_id, start_request, absence_is_final=False)
        return isinstance(started, str)

    async def _run_started_by(
        self, tenant_id: str, start_request: str, absence_is_final: bool
    ) -> str | Literal[False] | None:
        """The id of the tenant's latest run when `start_request` started it; False when it
        surely did not (another run is open, or `absence_is_final` and the latest run is
        another's or none); None when Temporal does not answer or cannot tell."""
        handle = self._client.get_workflow_handle(provision_workflow_id(tenant_id))
        try:
            description = await asyncio.wait_for(
                handle.describe(), timeout=_CONFIRM_TIMEOUT.total_seconds()
            )
            memo = await description.memo_value(starts.START_REQUEST_MEMO, default=None)
        except RPCError as exc:
            missing = exc.status is RPCStatusCode.NOT_FOUND
            return False if missing and absence_is_final else None
        except TimeoutError:
            return None
        if memo == start_request:
            return description.run_id
        if absence_is_final or description.status is WorkflowExecutionStatus.RUNNING:
            return False
        return None

    async def start_rollout(self, run: RolloutInput) -> None:
        """Start the rollout's run. A run already open runs the rollout's rows: that is not an
        error. When the answer is lost (an `RPCError` or a timeout after the request was sent)
        the latest run is asked whether this start was accepted: `RolloutRunNotStarted` when it
        surely was not, `ServiceUnavailable` when Temporal cannot tell (the rollout's row is
        left as it is: the reconciler starts a run for a rollout that has none)."""
        start_request = uuid.uuid4().hex
        try:
            await asyncio.wait_for(
                rollout_starts.start(self._client, run, self._settings, start_request),
                timeout=self._timeout,
            )
        except WorkflowAlreadyStartedError:
            return
        except (RPCError, TimeoutError) as exc:
            # A start given up on by this side may still be under way on the server's: only an
            # error the server (or the SDK, after its own retries) answered makes a missing run
            # mean "not started".
            answered = isinstance(exc, RPCError) and exc.status not in _UNSETTLED
            started = await self._rollout_started(run.rollout_id, start_request, answered)
            if started:
                return
            reason = exc.message if isinstance(exc, RPCError) else "no answer in time"
            if started is False:
                raise RolloutRunNotStarted(
                    f"Temporal did not start the run of rollout {run.rollout_id}: {reason}",
                    rolloutId=run.rollout_id,
                ) from None
            raise ServiceUnavailable(
                f"Temporal did not confirm the run of rollout {run.rollout_id} ({reason}); "
                "GET the rollout later (the reconciler starts a run for a rollout without one)",
                rolloutId=run.rollout_id,
            ) from None

    async def _rollout_started(
        self, rollout_id: str, start_request: str, absence_is_final: bool
    ) -> bool | None:
        """Whether a run of the rollout is open or was started by `start_request`; None when
        Temporal does not answer, or finds no run while `absence_is_final` is false."""
        handle = self._client.get_workflow_handle(rollout_workflow_id(rollout_id))
        try:
            description = await asyncio.wait_for(
                handle.describe(), timeout=_CONFIRM_TIMEOUT.total_seconds()
            )
            memo = await description.memo_value(rollout_starts.START_REQUEST_MEMO, default=None)
        except RPCError as exc:
            missing = exc.status is RPCStatusCode.NOT_FOUND
            return False if missing and absence_is_final else None
        except TimeoutError:
            return None
        if description.status is WorkflowExecutionStatus.RUNNING or memo == start_request:
            return True
        return False if absence_is_final else None

    async def rollout_run_closed(self, rollout_id: str) -> bool:
        """Whether no run of the rollout is open, waiting up to the API's timeout for an open
        one to close (a run closes a moment after it writes its rollout's final status)."""
        workflow_id = rollout_workflow_id(rollout_id)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return False
                description = await asyncio.wait_for(
                    self._client.get_workflow_handle(workflow_id).describe(), timeout=left
                )
                if description.status is not WorkflowExecutionStatus.RUNNING:
                    return True
                run = self._client.get_workflow_handle(workflow_id, run_id=description.run_id)
                # A run that continued as new leaves the next one open: look again.
                with contextlib.suppress(WorkflowFailureError, WorkflowContinuedAsNewError):
                    await asyncio.wait_for(
                        run.result(follow_runs=False),
                        timeout=deadline - asyncio.get_running_loop().time(),
                    )
        except TimeoutError:
            return False
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return True
            raise ServiceUnavailable(f"Temporal is unavailable: {exc.message}") from None
