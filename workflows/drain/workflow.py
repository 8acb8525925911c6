"""`DrainServerWorkflow`: every tenant of a storage server moved off it, `concurrency` at once.

The server is DRAINING before the run starts (the API writes it: it takes no new tenant). The
run reads the tenants on the server, then for each, in id order:

    begin    its move off the server, by placement in its tier's pool (never a server that is
             not ACTIVE, a DRAINING one among them, nor its own PostgreSQL server); a tenant
             MOVING already (an operator's move) is followed instead; one in another status, or
             with nowhere to go, fails with the reason
    move     `MoveTenantWorkflow` as a child (`tenant-move-{id}`, abandoned if the drain's run
             closes: a move is never cut short); when another run of the tenant's move is
             open, the tenant's row is looked at until it no longer moves
    judge    moved when the tenant is off the server, failed (with its statusReason) when it
             is still on it (its move rolled back)

Progress (total, moved, failed, running, failures) is written on the server's row as moves
begin and end. `cancel_drain` starts no further move; those in flight finish. At the end the
server is CORDONED (cancelled), DRAINED (no tenant but DELETED ones left) or stays DRAINING
with its failures (a new drain request starts it again).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.drains import DrainActivities
    from tenancy.drains import (
        BeginDrainMoveInput,
        BeginOutcome,
        DrainFailure,
        DrainProgressInput,
        DrainTenant,
        DrainTenantInput,
        DrainTenantState,
        FinishDrainInput,
        LoadDrainInput,
    )
    from workflows.common import failure_reason, run_activity
    from workflows.drain import options
    from workflows.drain.contracts import (
        CANCEL_SIGNAL,
        STATUS_QUERY,
        WORKFLOW_NAME,
        CancelDrain,
        DrainInput,
        DrainState,
    )
    from workflows.move import contracts as move


@workflow.defn(name=WORKFLOW_NAME)
class DrainServerWorkflow:
    """Moves every tenant of one server off it."""

    @workflow.init
    def __init__(self, request: DrainInput) -> None:
        self._request = request
        self._state = DrainState(server=request.server)
        self._cancel: CancelDrain | None = None
        # One progress write at a time, each with the latest counts: the last one written
        # is never an older picture.
        self._writing = asyncio.Lock()

    @workflow.run
    async def run(self, request: DrainInput) -> DrainState:
        """Move the server's tenants off it; return the drain's progress and end state."""
        plan = await run_activity(
            DrainActivities.load_drain, LoadDrainInput(server=request.server), options.LOAD
        )
        self._state.total = len(plan.tenants)
        await self._record()
        moves: list[asyncio.Task[None]] = []
        for tenant in plan.tenants:
            await workflow.wait_condition(
                lambda: self._state.running < request.concurrency or self._cancel is not None
            )
            if self._cancel is not None:
                break
            self._state.running += 1
            moves.append(asyncio.create_task(self._drain_one(tenant)))
        await asyncio.gather(*moves)
        finished = await run_activity(
            DrainActivities.finish_drain,
            FinishDrainInput(
                server=request.server,
                actor=self._actor(),
                cancelled=self._cancel is not None,
            ),
            options.FINISH,
        )
        self._state.state = finished.state
        workflow.logger.info("drain of %s ended: %s", request.server, finished.state.value)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.query(name=STATUS_QUERY)
    def get_status(self) -> DrainState:
        """The drain's progress."""
        return self._state

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel_drain(self, request: CancelDrain | None = None) -> None:
        """Start no further move; the moves in flight finish, then the server is CORDONED."""
        self._cancel = self._cancel or request or CancelDrain()
        self._state.cancel_requested = True

    def _actor(self) -> str:
        if self._cancel is not None and self._cancel.requested_by:
            return self._cancel.requested_by
        return self._request.requested_by

    async def _drain_one(self, tenant: DrainTenant) -> None:
        try:
            failure = await self._move_off(tenant.tenant_id)
            if failure is None:
                self._state.moved += 1
            else:
                self._state.failed += 1
                self._state.failures.append(
                    DrainFailure(tenant_id=tenant.tenant_id, reason=failure)
                )
        finally:
            self._state.running -= 1
        await self._record()

    async def _move_off(self, tenant_id: str) -> str | None:
        """Move the tenant off the server; None when it is off, else why it is not."""
        begun = await run_activity(
            DrainActivities.begin_drain_move,
            BeginDrainMoveInput(
                server=self._request.server,
                tenant_id=tenant_id,
                actor=self._request.requested_by,
                reason=self._request.reason,
            ),
            options.BEGIN,
        )
        if begun.outcome is BeginOutcome.LEFT:
            return None
        if begun.outcome is BeginOutcome.REFUSED:
            return begun.reason or "refused"
        await self._record()
        run_failure = await self._follow_move(tenant_id)
        state = await self._tenant_state(tenant_id)
        if state.left:
            return None
        status = state.status.value if state.status else "gone"
        why = state.status_reason or run_failure
        return f"still on the server ({status})" + (f": {why}" if why else "")

    async def _follow_move(self, tenant_id: str) -> str | None:
        """Run the tenant's move as a child until it ends, or follow the run of it that is
        open already; why its run failed, if it did."""
        try:
            child = await workflow.start_child_workflow(
                move.WORKFLOW_NAME,
                move.MoveInput(tenant_id=tenant_id, requested_by=self._request.requested_by),
                id=move.move_workflow_id(tenant_id),
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                result_type=move.MoveState,
            )
        except WorkflowAlreadyStartedError:
            while (await self._tenant_state(tenant_id)).moving:
                await workflow.sleep(options.MOVE_POLL)
            return None
        try:
            await child
        except ChildWorkflowError as err:
            return f"its move's run failed: {failure_reason(err)}"
        return None

    async def _tenant_state(self, tenant_id: str) -> DrainTenantState:
        return await run_activity(
            DrainActivities.drain_tenant_state,
            DrainTenantInput(server=self._request.server, tenant_id=tenant_id),
            options.TENANT_STATE,
        )

    async def _record(self) -> None:
        async with self._writing:
            await run_activity(
                DrainActivities.record_drain_progress,
                DrainProgressInput(
                    server=self._request.server,
                    total=self._state.total,
                    moved=self._state.moved,
                    failed=self._state.failed,
                    running=self._state.running,
                    failures=list(self._state.failures),
                ),
                options.PROGRESS,
            )
