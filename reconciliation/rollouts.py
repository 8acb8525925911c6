"""The rollout rule: a rollout whose row is RUNNING, PAUSED or HALTED needs an open run of
`FleetRolloutWorkflow` (nothing else moves it, or hears its resume). One without is reported,
and the repair starts a run that goes on from the rows (the rows are the truth): its input is
rebuilt from the stored request, it starts at the first wave with a tenant PENDING or RUNNING
with every wave's counts so far (so a failure in a finished wave still fails the rollout), and
its first batch takes back the rows the last batch held. A rollout is recorded a moment before
its run is started, so rows changed within `settled_for` are left for the next pass.

The other way round, a rollout that ended (its row SUCCEEDED, FAILED or CANCELLED) while a run of
it is still open is reported only: such a run has nothing left to do, and retry-failed waits for
it to close. An operator terminates it (a run closes a moment after it writes the final status,
so only rows that ended `settled_for` ago count).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from infra.db.rollouts import RolloutMissing, RolloutRepository
from tenancy.rollouts import RolloutStatus
from tenancy.settings import Settings
from workflows.rollout import starts
from workflows.rollout.contracts import WORKFLOW_NAME, rollout_workflow_id

_WORKFLOW_ID_PREFIX = rollout_workflow_id("")


@dataclass(frozen=True)
class RolloutWithoutRun:
    """A rollout whose row needs a run, and what Temporal says of its latest one."""

    rollout_id: str
    status: RolloutStatus
    run: str

    @property
    def detail(self) -> str:
        """The report line."""
        return f"rollout is {self.status.value}, its run is {self.run}"


@dataclass(frozen=True)
class RunAfterEnd:
    """A rollout that ended while a run of it is still open."""

    rollout_id: str
    status: RolloutStatus

    @property
    def detail(self) -> str:
        """The report line."""
        return (
            f"rollout is {self.status.value}, a run of it is still open "
            "(left running: terminate it; retry-failed waits for it to close)"
        )


class RolloutRule:
    """Finds rollouts without an open run, and resumes them from their rows."""

    def __init__(
        self,
        rollouts: RolloutRepository,
        client: Client,
        settings: Settings,
        *,
        settled_for: timedelta | None = None,
    ) -> None:
        self._rollouts = rollouts
        self._client = client
        self._settings = settings
        # The API records a rollout, then starts its run within its own timeout.
        self._settled_for = settled_for if settled_for is not None else settings.create_timeout * 2

    async def without_run(self) -> list[RolloutWithoutRun]:
        """Every rollout whose row needs a run while Temporal has none open."""
        found = []
        for rollout_id in await self._rollouts.needing_run(self._settled_for):
            run = await self._latest_run(rollout_id)
            if run is WorkflowExecutionStatus.RUNNING:
                continue
            try:
                status = await self._rollouts.status(rollout_id)
            except RolloutMissing:
                continue
            if status in (RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.HALTED):
                found.append(
                    RolloutWithoutRun(
                        rollout_id=rollout_id,
                        status=status,
                        run="not found" if run is None else run.name.lower(),
                    )
                )
        return found

    async def runs_after_end(self) -> list[RunAfterEnd]:
        """Rollouts that ended while a run of them is open (listed through visibility, each
        confirmed with `describe`)."""
        open_ids = []
        query = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
        async for execution in self._client.list_workflows(query):
            if execution.id.startswith(_WORKFLOW_ID_PREFIX):
                open_ids.append(execution.id.removeprefix(_WORKFLOW_ID_PREFIX))
        ended = await self._rollouts.ended(open_ids, self._settled_for)
        found = []
        for rollout_id, status in sorted(ended.items()):
            if await self._latest_run(rollout_id) is WorkflowExecutionStatus.RUNNING:
                found.append(RunAfterEnd(rollout_id=rollout_id, status=status))
        return found

    async def resume(self, stuck: RolloutWithoutRun, actor: str) -> bool:
        """Start a run that goes on from the rollout's rows; False when a run is open by now."""
        rollout = await self._rollouts.get(stuck.rollout_id)
        point = await self._rollouts.resume_point(stuck.rollout_id)
        current = point.counts.get(point.wave)
        run = starts.resumption(
            rollout.id,
            rollout.request,
            self._settings,
            rollout.created_by,
            wave=point.wave,
            batch=point.batch,
            counts=point.counts,
            # A halt is acknowledged where it stands: a resume judges what follows it.
            halt_baseline=current if rollout.status is RolloutStatus.HALTED else None,
        )
        try:
            await starts.start(self._client, run, self._settings, f"{actor}:{uuid.uuid4().hex}")
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def _latest_run(self, rollout_id: str) -> WorkflowExecutionStatus | None:
        handle = self._client.get_workflow_handle(rollout_workflow_id(rollout_id))
        try:
            return (await handle.describe()).status
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
