"""`MoveTenantWorkflow`: a tenant's storage moved to another server, with the services frozen
out of it only while it is copied.

    PREPARING   the tenant's empty storage on the target, granted as at provisioning
    FROZEN      the services' roles can no longer use the source; their sessions on it ended
    COPYING     the source's content into the target (pg_dump, restored as each owner)
    VERIFYING   every table's rows and content equal on both sides
    SWITCHED    in one transaction: the row names the target (server, jdbcUrl, epoch + 1),
                ACTIVE, TENANT_MOVED; the frozen source is kept for
                PLATFORM_MOVE_SOURCE_RETENTION, then the worker drops it

The move is recorded on the tenant's row (MOVING, `move`) by the API before the run starts; the
run reads it there, so a run started again (a lost run, a worker gone) carries on: every step
before the switch is idempotent and runs again from PREPARING, a move whose row says SWITCHED
goes straight to the switch.

Before the switch, a step that fails for good, a cancel (`request_cancel_move`, or the run's
cancellation) rolls the move back: the source unfrozen, the partial target dropped, the tenant
ACTIVE on its source with MOVE_FAILED (MOVE_CANCELLED). A rollback that cannot finish yet (the
source away) keeps the tenant MOVING with the reason and tries again until it can. After the
switch nothing is rolled back: the tenant lives on the target; a run cancelled during the
switch finishes it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.moves import MoveActivities
    from infra import search_attributes as sa
    from tenancy.models import MovePhase
    from tenancy.moves import (
        LoadMoveInput,
        MovePhaseInput,
        MoveReasonInput,
        MoveRecord,
        MoveStepInput,
        RollBackInput,
        SwitchInput,
        rollback_reason,
        rollback_under_way,
    )
    from tenancy.status import TenantStatus
    from workflows.common import ActivityOptions, failure_reason, follow_status, run_activity
    from workflows.move import options
    from workflows.move.contracts import (
        CANCEL_SIGNAL,
        CANCEL_UPDATE,
        STATUS_QUERY,
        WORKFLOW_NAME,
        CancelDecision,
        CancelMove,
        MoveInput,
        MoveState,
    )


# Runs from this one on write a rollback on the row before it starts, and a run started again
# over one finishes it.
RECORDED_ROLLBACK_PATCH = "move-rollback-recorded"


class MoveAborted(Exception):
    """The move stops before its switch and is rolled back, for `reason`."""

    def __init__(self, reason: str, *, cancelled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cancelled = cancelled


@workflow.defn(name=WORKFLOW_NAME)
class MoveTenantWorkflow:
    """Moves one tenant's storage to the server its row's `move` names."""

    @workflow.init
    def __init__(self, request: MoveInput) -> None:
        self._request = request
        self._state = MoveState(tenant_id=request.tenant_id, phase=MovePhase.PREPARING)
        self._cancel: CancelMove | None = None
        # Set as the switch begins: from then on the move is not undone, nor cancelled.
        self._switching = False

    @workflow.run
    async def run(self, request: MoveInput) -> MoveState:
        """Move the tenant, or roll the move back; return where it ended."""
        workflow.upsert_search_attributes([sa.TENANT_ID.value_set(request.tenant_id)])
        record = await run_activity(
            MoveActivities.load_move, LoadMoveInput(tenant_id=request.tenant_id), options.LOAD
        )
        if (
            record.status is not TenantStatus.MOVING
            or record.from_server is None
            or record.to_server is None
        ):
            # Done or rolled back by an earlier run: nothing is left to do.
            self._state.status_reason = f"no move under way (the tenant is {record.status.value})"
            return self._state
        self._state.from_server = record.from_server
        self._state.to_server = record.to_server
        step = MoveStepInput(
            tenant_id=request.tenant_id,
            mode=record.storage_mode,
            from_server=record.from_server,
            to_server=record.to_server,
        )
        # A run started again over a rollback under way finishes it (a cancel stays a cancel).
        under_way = (
            rollback_under_way(record.status_reason)
            if workflow.patched(RECORDED_ROLLBACK_PATCH)
            else None
        )
        try:
            if under_way is not None and record.phase is not MovePhase.SWITCHED:
                raise MoveAborted(under_way[0], cancelled=under_way[1])
            if record.phase is not MovePhase.SWITCHED:
                await self._before_switch(step)
        except MoveAborted as aborted:
            await self._roll_back(step, aborted.reason, cancelled=aborted.cancelled)
            return self._state
        except (asyncio.CancelledError, FailureError) as err:
            if not is_cancelled_exception(err):
                raise
            await self._roll_back(step, "the move's run was cancelled", cancelled=True)
            raise
        await self._switch(step, record)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.query(name=STATUS_QUERY)
    def get_status(self) -> MoveState:
        """Where the move stands."""
        return self._state

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel_move(self, request: CancelMove | None = None) -> None:
        """Roll the move back at its next step; ignored once the switch has begun."""
        if self._switching:
            workflow.logger.info("cancel_move ignored: the switch has begun")
            return
        self._cancel = request or CancelMove()
        self._state.cancel_requested = True

    @workflow.update(name=CANCEL_UPDATE)
    def request_cancel_move(self, request: CancelMove) -> CancelDecision:
        """Like `cancel_move`, but answers whether the move will be rolled back: not once the
        switch has begun (the API answers 409 then)."""
        if self._switching:
            return CancelDecision(accepted=False, phase=self._state.phase)
        self._cancel = self._cancel or request
        self._state.cancel_requested = True
        return CancelDecision(accepted=True, phase=self._state.phase)

    async def _before_switch(self, step: MoveStepInput) -> None:
        await self._phase(MovePhase.PREPARING)
        await self._storage_step(MoveActivities.prepare_move_target, step, options.STORAGE_STEP)
        await self._phase(MovePhase.FROZEN)
        await self._storage_step(MoveActivities.freeze_move_source, step, options.STORAGE_STEP)
        await self._phase(MovePhase.COPYING)
        await self._storage_step(MoveActivities.copy_move, step, options.COPY)
        await self._phase(MovePhase.VERIFYING)
        await self._storage_step(MoveActivities.verify_move, step, options.VERIFY)
        self._check_cancel()

    def _check_cancel(self) -> None:
        if self._cancel is not None:
            by = self._cancel.requested_by
            raise MoveAborted(f"cancelled by {by}" if by else "cancelled", cancelled=True)

    async def _phase(self, phase: MovePhase, *, cancellable: bool = True) -> None:
        if cancellable:
            self._check_cancel()
        await run_activity(
            MoveActivities.set_move_phase,
            MovePhaseInput(tenant_id=self._request.tenant_id, phase=phase),
            options.PHASE,
        )
        self._state.phase = phase
        workflow.upsert_search_attributes([sa.MOVE_PHASE.value_set(phase.value)])

    async def _storage_step(
        self,
        method: Callable[[Any, MoveStepInput], Awaitable[Any]],
        step: MoveStepInput,
        opts: ActivityOptions,
    ) -> None:
        try:
            await run_activity(method, step, opts)
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            phase = self._state.phase.value.lower()
            raise MoveAborted(f"{phase} failed: {failure_reason(err)}") from err

    async def _switch(self, step: MoveStepInput, record: MoveRecord) -> None:
        self._switching = True
        # Once begun, the switch is finished even when the run is cancelled meanwhile: cut
        # short, it would leave the tenant MOVING on its frozen source with no run to go on.
        switching = asyncio.ensure_future(self._switch_steps(step, record))
        try:
            await asyncio.shield(switching)
        except asyncio.CancelledError:
            await switching
            raise

    async def _switch_steps(self, step: MoveStepInput, record: MoveRecord) -> None:
        await self._phase(MovePhase.SWITCHED, cancellable=False)
        drop_after = workflow.now() + timedelta(seconds=record.retention_seconds)
        await run_activity(
            MoveActivities.switch_move,
            SwitchInput(
                tenant_id=step.tenant_id,
                mode=step.mode,
                from_server=step.from_server,
                to_server=step.to_server,
                drop_after=drop_after,
            ),
            options.SWITCH,
        )
        follow_status(
            step.tenant_id,
            TenantStatus.ACTIVE,
            f"moved from {step.from_server} to {step.to_server}",
        )

    async def _roll_back(self, step: MoveStepInput, reason: str, *, cancelled: bool) -> None:
        """Undo the storage until it is undone, then the tenant ACTIVE on its source."""
        self._state.status_reason = reason
        workflow.logger.info("rolling back the move of %s: %s", step.tenant_id, reason)
        recorded = workflow.patched(RECORDED_ROLLBACK_PATCH)
        if recorded:
            await run_activity(
                MoveActivities.set_move_reason,
                MoveReasonInput(
                    tenant_id=step.tenant_id,
                    reason=rollback_reason(reason, cancelled=cancelled),
                ),
                options.REASON,
            )
        while True:
            try:
                await run_activity(MoveActivities.undo_move_storage, step, options.UNDO)
                break
            except FailureError as err:
                if is_cancelled_exception(err):
                    raise
                waiting = (
                    rollback_reason(reason, cancelled=cancelled, waiting=failure_reason(err))
                    if recorded
                    else f"rolling back ({reason}), waiting: {failure_reason(err)}"
                )
                self._state.status_reason = waiting
                await run_activity(
                    MoveActivities.set_move_reason,
                    MoveReasonInput(tenant_id=step.tenant_id, reason=waiting),
                    options.REASON,
                )
                await workflow.sleep(options.UNDO_PAUSE)
        await run_activity(
            MoveActivities.roll_back_move,
            RollBackInput(tenant_id=step.tenant_id, reason=reason, cancelled=cancelled),
            options.ROLL_BACK,
        )
        self._state.status_reason = reason
        follow_status(step.tenant_id, TenantStatus.ACTIVE, f"move rolled back: {reason}")
