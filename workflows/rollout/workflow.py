"""`FleetRolloutWorkflow`: every tenant of a rollout to each selected service's newest version,
wave after wave, in batches.

The tenants are rows (`rollout_tenants`), materialised when the rollout was created; the workflow
carries only positions and counts. Each batch is one activity that claims up to
`concurrency x BATCH_FACTOR` tenants of the current wave and calls them with at most
`concurrency` in flight, so a run's history grows by a few events per batch, and the run continues
as new when Temporal suggests it. Between batches the workflow reads the rollout's status (the
table is the truth: the API pauses, resumes and cancels there and signals the run to look):
PAUSED and HALTED wait for `resume` or `cancel`; CANCELLED ends after the batch in flight. A wave
whose failed/finished ratio exceeds `maxFailureRatio` halts the rollout (`tenancy.rollouts.halts`):
each batch applies the rule before it starts a tenant and stops starting any once it holds; the
run then halts. A wave is done once none of its tenants is pending or running, so the rollout
ends SUCCEEDED only when every tenant succeeded or was skipped.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.rollouts import RolloutActivities
    from infra import search_attributes as sa
    from infra.telemetry import metrics
    from tenancy.rollouts import RolloutCounts, RolloutStatus, WaveStatus, halts_since
    from workflows.common import METADATA_RETRY, ActivityOptions, run_activity
    from workflows.rollout.contracts import (
        CANCEL_SIGNAL,
        PAUSE_SIGNAL,
        PROGRESS_QUERY,
        RESUME_SIGNAL,
        WORKFLOW_NAME,
        BatchInput,
        RolloutInput,
        RolloutProgress,
        RolloutSignal,
        RolloutStatusInput,
        WaveInput,
    )

# Tenants claimed per batch, as a multiple of the rollout's concurrency: enough to keep every
# slot busy while a slow tenant finishes, few enough that a batch's retry repeats little.
BATCH_FACTOR = 4
# Runs from here on count a wave done only once none of its tenants is pending or running, keep
# a resume or cancel handled before they wait, and ignore a resume signalled before they stop
# by themselves (a halt, the wave gate).
ROWS_TRUTH_PATCH = "rollout-rows-truth"
_STATUS_WRITE = ActivityOptions(
    start_to_close=timedelta(seconds=10), retry=METADATA_RETRY, local=True
)


def _batch_options(request: RolloutInput) -> ActivityOptions:
    # A batch runs its tenants' calls (each bounded by the call timeout, retried a few times)
    # with at most `concurrency` at once; it heartbeats every two seconds.
    per_tenant = (request.call.timeout + timedelta(seconds=5)) * request.call.max_attempts
    return ActivityOptions(
        start_to_close=per_tenant * BATCH_FACTOR * len(request.services) + timedelta(minutes=1),
        heartbeat=timedelta(seconds=10),
        retry=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
        ),
    )


@workflow.defn(name=WORKFLOW_NAME)
class FleetRolloutWorkflow:
    """Runs one rollout's waves; waits while it is paused or halted."""

    @workflow.init
    def __init__(self, request: RolloutInput) -> None:
        self._request = request
        self._progress = RolloutProgress(
            rollout_id=request.rollout_id,
            wave=request.wave,
            batch=request.batch,
            waves=dict(request.counts),
        )
        self._halt_baseline = request.halt_baseline
        self._nudged = False
        self._wanted: RolloutStatus | None = None
        self._signaller = RolloutSignal()
        self._truth = False
        # The rollout's duration runs from its first run's start, across continue-as-new.
        self._started = request.started_at or workflow.info().start_time

    @workflow.run
    async def run(self, request: RolloutInput) -> RolloutProgress:
        """Wave after wave until every tenant has a result, or the rollout is cancelled."""
        self._truth = workflow.patched(ROWS_TRUTH_PATCH)
        self._show(self._progress.status, force=True)
        while self._progress.wave < request.waves:
            wave = self._progress.wave
            await self._set_wave(wave, WaveStatus.RUNNING)
            finished = await self._run_wave(wave)
            if not finished:
                return await self._end_cancelled(wave)
            counts = self._progress.waves.get(wave, RolloutCounts())
            await self._set_wave(wave, WaveStatus.FAILED if counts.failed else WaveStatus.SUCCEEDED)
            self._progress.wave += 1
            self._halt_baseline = None
            if request.pause_after_each_wave and self._progress.wave < request.waves:
                self._stopping()
                await self._status(
                    RolloutStatus.PAUSED,
                    f"wave {self._wave_name(wave)} done; resume to go on",
                    own=True,
                )
                if not await self._wait_while_stopped():
                    return await self._end_cancelled(self._progress.wave)
        failed = sum(c.failed for c in self._progress.waves.values())
        final = RolloutStatus.FAILED if failed else RolloutStatus.SUCCEEDED
        ended = await self._status(final, f"{failed} tenants failed" if failed else None)
        metrics.rollout_finished(
            workflow.metric_meter(), ended.value, workflow.now() - self._started
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._progress

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RolloutProgress:
        """Where the rollout stands: status, wave, batch and each wave's counts."""
        return self._progress

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self, request: RolloutSignal | None = None) -> None:
        """Start no new batch once the one in flight ends."""
        self._ask(RolloutStatus.PAUSED, request)

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, request: RolloutSignal | None = None) -> None:
        """Go on with the next tenant after a pause or a halt."""
        self._ask(RolloutStatus.RUNNING, request)

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self, request: RolloutSignal | None = None) -> None:
        """End after the batch in flight; tenants not started stay pending."""
        self._ask(RolloutStatus.CANCELLED, request)

    def _ask(self, target: RolloutStatus, request: RolloutSignal | None) -> None:
        self._wanted = target
        self._signaller = request or RolloutSignal()
        self._nudged = True

    async def _run_wave(self, wave: int) -> bool:
        """Batches until the wave has no pending tenant; False when the rollout was cancelled."""
        request = self._request
        while True:
            if not await self._apply_wanted():
                return False
            result = await run_activity(
                RolloutActivities.run_rollout_batch,
                BatchInput(
                    rollout_id=request.rollout_id,
                    wave=wave,
                    batch=self._progress.batch,
                    limit=request.concurrency * BATCH_FACTOR,
                    services=request.services,
                    concurrency=request.concurrency,
                    call=request.call,
                    max_failure_ratio=request.max_failure_ratio,
                    halt_baseline=self._halt_baseline,
                ),
                _batch_options(request),
            )
            self._progress.batch += 1
            self._progress.waves[wave] = result.counts
            self._show(result.rollout_status)
            if result.rollout_status is RolloutStatus.CANCELLED:
                return False
            if result.rollout_status in (RolloutStatus.PAUSED, RolloutStatus.HALTED):
                if not await self._wait_while_stopped():
                    return False
                continue
            unfinished = result.counts.pending + (result.counts.running if self._truth else 0)
            if result.claimed == 0 and unfinished == 0:
                return True
            if self._halting(result.counts):
                self._stopping()
                failed = result.counts.failed - (self._halt_baseline or RolloutCounts()).failed
                halted = await self._status(
                    RolloutStatus.HALTED,
                    f"wave {self._wave_name(wave)}: {failed} failed, over maxFailureRatio "
                    f"{request.max_failure_ratio}",
                )
                if not await self._wait_while_stopped():
                    return False
                # A halt refused (an operator's pause came first) was never acknowledged: the
                # next batch finds the wave still over the limit and the halt is written then.
                if halted is RolloutStatus.HALTED or not self._truth:
                    self._halt_baseline = result.counts
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._continuation(wave))

    def _wave_name(self, wave: int) -> str:
        names = self._request.wave_names
        return names[wave] if wave < len(names) else str(wave)

    def _halting(self, counts: RolloutCounts) -> bool:
        return halts_since(counts, self._halt_baseline, self._request.max_failure_ratio)

    def _stopping(self) -> None:
        """The run stops the rollout by itself (a halt, the wave gate): a resume signalled
        before this stop (with the rollout RUNNING, or answering an operator's pause already
        lifted) does not answer it."""
        if self._truth and self._wanted is RolloutStatus.RUNNING:
            self._wanted = None

    async def _apply_wanted(self) -> bool:
        """Apply a signalled pause, resume or cancel to the table (a no-op when the API already
        did); False once the rollout is cancelled."""
        wanted, self._wanted = self._wanted, None
        if wanted is RolloutStatus.CANCELLED:
            await self._status(RolloutStatus.CANCELLED, self._signaller.reason)
            return False
        if wanted is RolloutStatus.PAUSED:
            await self._status(RolloutStatus.PAUSED, self._signaller.reason)
            return await self._wait_while_stopped()
        return True

    async def _wait_while_stopped(self) -> bool:
        """Wait for resume or cancel; True to go on, False when cancelled."""
        while True:
            if self._truth:
                # The table may already say CANCELLED (a refused status write read it), and a
                # resume or cancel handled while the run had not yet come here still counts.
                if self._progress.status is RolloutStatus.CANCELLED:
                    return False
                await workflow.wait_condition(lambda: self._wanted is not None)
            else:
                self._nudged = False
                await workflow.wait_condition(lambda: self._nudged)
            wanted, self._wanted = self._wanted, None
            if wanted is RolloutStatus.CANCELLED:
                await self._status(RolloutStatus.CANCELLED, self._signaller.reason)
                return False
            if wanted is RolloutStatus.RUNNING:
                status = await self._status(RolloutStatus.RUNNING, self._signaller.reason)
                if status is RolloutStatus.RUNNING:
                    return True
                if status is RolloutStatus.CANCELLED:
                    return False

    async def _status(
        self, target: RolloutStatus, reason: str | None, *, own: bool = False
    ) -> RolloutStatus:
        """Move the rollout to `target` (the run's own decision when `own`, else on behalf of
        whoever signalled last); the status it has afterwards."""
        result = await run_activity(
            RolloutActivities.set_rollout_status,
            RolloutStatusInput(
                rollout_id=self._request.rollout_id,
                target=target,
                actor=self._own_actor() if own else self._actor(target),
                reason=reason,
            ),
            _STATUS_WRITE,
        )
        self._show(result.status)
        return result.status

    def _show(self, status: RolloutStatus, force: bool = False) -> None:
        """Keep the progress and the `RolloutStatus` search attribute at `status`."""
        if force or status is not self._progress.status:
            workflow.upsert_search_attributes([sa.ROLLOUT_STATUS.value_set(status.value)])
        self._progress.status = status

    def _actor(self, target: RolloutStatus) -> str:
        # An operator's signal carries who asked; the run's own decisions are the workflow's.
        if target in (RolloutStatus.RUNNING, RolloutStatus.CANCELLED) or (
            target is RolloutStatus.PAUSED and self._signaller.requested_by != "signal"
        ):
            return self._signaller.requested_by
        return self._own_actor()

    def _own_actor(self) -> str:
        return f"workflow:{workflow.info().workflow_id}"

    async def _set_wave(self, wave: int, status: WaveStatus) -> None:
        await run_activity(
            RolloutActivities.set_wave_status,
            WaveInput(rollout_id=self._request.rollout_id, wave=wave, status=status),
            _STATUS_WRITE,
        )

    async def _end_cancelled(self, wave: int) -> RolloutProgress:
        for later in range(wave, self._request.waves):
            await self._set_wave(later, WaveStatus.CANCELLED)
        self._show(RolloutStatus.CANCELLED)
        metrics.rollout_finished(
            workflow.metric_meter(),
            RolloutStatus.CANCELLED.value,
            workflow.now() - self._started,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._progress

    def _continuation(self, wave: int) -> RolloutInput:
        return self._request.model_copy(
            update={
                "wave": wave,
                "batch": self._progress.batch,
                "halt_baseline": self._halt_baseline,
                "counts": self._progress.waves,
                "started_at": self._started,
            }
        )
