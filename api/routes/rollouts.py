"""Fleet rollout endpoints: start one, watch it, pause, resume, cancel, retry its failures.

Scopes `rollouts:write` (start, pause, resume, cancel, retry-failed) and `rollouts:read`. The
rollout's tenants are chosen and written to the database when it is created, in one
transaction; its `FleetRolloutWorkflow` (`rollout-{id}`, the rollouts' own task queue) then runs
them. Pause, resume and cancel change the rollout's status in the database (guarded: 409 when
the status does not allow it) and signal the run to look; the run starts no batch while the
rollout is not RUNNING.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import Config, RolloutReader, Rollouts, RolloutWriter, Workflows
from api.errors import ApiError, InvalidRequest, StatusConflict
from api.gateway import RolloutRunNotStarted, WorkflowGateway
from api.guard import GuardedRoute
from api.routes.common import AUTH_RESPONSES
from infra.db.rollouts import RolloutMissing, RolloutRepository, RolloutStateRefused
from tenancy.models import CamelModel
from tenancy.rollout_list import RolloutSummary
from tenancy.rollouts import (
    Rollout,
    RolloutAction,
    RolloutEvent,
    RolloutRequest,
    RolloutStatus,
    RolloutTenant,
    RolloutTenantStatus,
    WaveSpec,
)
from tenancy.settings import Settings
from workflows.rollout.contracts import (
    CANCEL_SIGNAL,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    RolloutInput,
    RolloutSignal,
    rollout_workflow_id,
)
from workflows.rollout.starts import rollout_input

rollouts_router = APIRouter(prefix="/api/rollouts", tags=["rollouts"], route_class=GuardedRoute)
RolloutIdPath = Annotated[str, Path(pattern=r"^[a-f0-9]{12}$", description="The rollout id.")]


class RolloutNotFound(ApiError):
    """No rollout with that id."""

    status = 404
    title = "Rollout not found"
    slug = "rollout-not-found"


class RolloutList(CamelModel):
    """Rollouts, newest first, each summarised (`GET /api/rollouts/{id}` has the whole of one)."""

    items: list[RolloutSummary]


class RolloutEvents(CamelModel):
    """A rollout's audit trail, oldest first."""

    items: list[RolloutEvent]


class RolloutTenantPage(CamelModel):
    """One page of a rollout's tenants in rollout order; pass `nextCursor` back as `cursor`."""

    items: list[RolloutTenant]
    next_cursor: str | None = None


def _resolved(request: RolloutRequest, settings: Settings) -> RolloutRequest:
    """The request with every default filled in, as it is stored and run."""
    configured = [s.name for s in settings.downstream_services]
    services = request.services or configured
    unknown = [name for name in services if name not in configured]
    if unknown:
        message = f"unknown service(s): {', '.join(unknown)}"
        raise InvalidRequest(
            f"invalid value for: services ({message})",
            errors=[{"field": "services", "message": message}],
        )
    return request.model_copy(
        update={
            "services": list(dict.fromkeys(services)),
            "waves": request.waves or [WaveSpec(name="all")],
            "concurrency": request.concurrency or settings.rollout_concurrency,
            "max_failure_ratio": (
                request.max_failure_ratio
                if request.max_failure_ratio is not None
                else settings.rollout_max_failure_ratio
            ),
        }
    )


async def start_run(
    workflows: WorkflowGateway, rollouts: RolloutRepository, run: RolloutInput
) -> None:
    """Start the rollout's run so that its row and its run agree: when Temporal surely did not
    start it, the rollout is FAILED (nothing runs it; retry-failed runs its tenants); when
    Temporal cannot tell, the row stays as it is and the reconciler starts a run if none is
    open."""
    try:
        await workflows.start_rollout(run)
    except RolloutRunNotStarted:
        await rollouts.change_status(
            run.rollout_id, RolloutStatus.FAILED, "platform", None, "could not start its run"
        )
        raise


async def _load(rollouts: RolloutRepository, rollout_id: str) -> Rollout:
    try:
        return await rollouts.get(rollout_id)
    except RolloutMissing:
        raise RolloutNotFound(f"no rollout {rollout_id}") from None


@rollouts_router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Rollout,
    responses={**AUTH_RESPONSES, 422: {"description": "Invalid request or unknown service"}},
)
async def start_rollout(
    principal: RolloutWriter,
    request: RolloutRequest,
    response: Response,
    rollouts: Rollouts,
    settings: Config,
    workflows: Workflows,
) -> Rollout:
    """Start a rollout: its tenants are chosen now, wave by wave, and run in order."""
    resolved = _resolved(request, settings)
    rollout_id = uuid.uuid4().hex[:12]
    assert resolved.services is not None
    assert resolved.waves is not None
    total = await rollouts.create(
        rollout_id, resolved, resolved.services, resolved.waves, principal.subject
    )
    if total == 0:
        await rollouts.change_status(
            rollout_id,
            RolloutStatus.SUCCEEDED,
            principal.subject,
            RolloutAction.FINISHED,
            "no tenant selected",
        )
    else:
        run = rollout_input(rollout_id, resolved, settings, principal.subject)
        await start_run(workflows, rollouts, run)
    response.headers["Location"] = f"/api/rollouts/{rollout_id}"
    return await _load(rollouts, rollout_id)


@rollouts_router.get("", response_model=RolloutList, responses=AUTH_RESPONSES)
async def list_rollouts(
    _: RolloutReader,
    rollouts: Rollouts,
    rollout_status: Annotated[RolloutStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> RolloutList:
    """The newest `limit` rollouts (100 at most), optionally in one status. Each request is
    summarised: its tenant-id lists are replaced by `tenantIdCount`; no `failures`."""
    return RolloutList(items=await rollouts.newest(rollout_status, limit))


@rollouts_router.get(
    "/{rollout_id}",
    response_model=Rollout,
    responses={**AUTH_RESPONSES, 404: {"description": "No such rollout"}},
)
async def get_rollout(_: RolloutReader, rollout_id: RolloutIdPath, rollouts: Rollouts) -> Rollout:
    """The rollout: status, counts overall and per wave, its first 100 failures."""
    return await _load(rollouts, rollout_id)


@rollouts_router.get(
    "/{rollout_id}/tenants",
    response_model=RolloutTenantPage,
    responses={**AUTH_RESPONSES, 404: {"description": "No such rollout"}},
)
async def rollout_tenants(
    _: RolloutReader,
    rollout_id: RolloutIdPath,
    rollouts: Rollouts,
    tenant_status: Annotated[RolloutTenantStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> RolloutTenantPage:
    """The rollout's tenants in rollout order, optionally only those with one result."""
    await _load(rollouts, rollout_id)
    items, after = await rollouts.tenants(
        rollout_id, tenant_status, int(cursor) if cursor else None, limit
    )
    return RolloutTenantPage(items=items, next_cursor=str(after) if after is not None else None)


@rollouts_router.get(
    "/{rollout_id}/events",
    response_model=RolloutEvents,
    responses={**AUTH_RESPONSES, 404: {"description": "No such rollout"}},
)
async def rollout_events(
    _: RolloutReader, rollout_id: RolloutIdPath, rollouts: Rollouts
) -> RolloutEvents:
    """Who started, paused, resumed, halted, cancelled or retried the rollout, and its end."""
    await _load(rollouts, rollout_id)
    return RolloutEvents(items=await rollouts.events(rollout_id))


async def _change(
    rollouts: RolloutRepository,
    workflows: Any,
    rollout_id: str,
    target: RolloutStatus,
    action: RolloutAction,
    signal: str,
    actor: str,
) -> Rollout:
    await _load(rollouts, rollout_id)
    try:
        await rollouts.change_status(rollout_id, target, actor, action, repeat_ok=False)
    except RolloutStateRefused as refused:
        raise StatusConflict(str(refused), rolloutStatus=refused.current.value) from None
    await workflows.signal(
        rollout_workflow_id(rollout_id), signal, RolloutSignal(requested_by=actor)
    )
    return await _load(rollouts, rollout_id)


_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"description": "No such rollout"},
    409: {"description": "The rollout's status does not allow it"},
}


def _status_route(
    verb: str, target: RolloutStatus, action: RolloutAction, signal: str, doc: str
) -> None:
    """Register `POST /{rollout_id}/{verb}`: move the rollout to `target` and signal its run."""

    async def endpoint(
        principal: RolloutWriter,
        rollout_id: RolloutIdPath,
        rollouts: Rollouts,
        workflows: Workflows,
    ) -> Rollout:
        return await _change(
            rollouts, workflows, rollout_id, target, action, signal, principal.subject
        )

    endpoint.__name__ = f"{verb}_rollout"
    endpoint.__doc__ = doc
    rollouts_router.add_api_route(
        f"/{{rollout_id}}/{verb}",
        endpoint,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Rollout,
        responses=_CHANGE_RESPONSES,
    )


_status_route(
    "pause",
    RolloutStatus.PAUSED,
    RolloutAction.PAUSED,
    PAUSE_SIGNAL,
    "Let calls in flight finish and start no new ones (409 unless RUNNING).",
)
_status_route(
    "resume",
    RolloutStatus.RUNNING,
    RolloutAction.RESUMED,
    RESUME_SIGNAL,
    "Go on with the next tenant (409 unless PAUSED or HALTED).",
)
_status_route(
    "cancel",
    RolloutStatus.CANCELLED,
    RolloutAction.CANCELLED,
    CANCEL_SIGNAL,
    "Stop after the calls in flight; tenants not started stay pending (409 once it ended).",
)


@rollouts_router.post(
    "/{rollout_id}/retry-failed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Rollout,
    responses=_CHANGE_RESPONSES,
)
async def retry_failed(
    principal: RolloutWriter,
    rollout_id: RolloutIdPath,
    rollouts: Rollouts,
    settings: Config,
    workflows: Workflows,
) -> Rollout:
    """Run only the tenants that failed, as a new pass of the same rollout (409 unless it ended
    FAILED and its last run has closed)."""
    rollout = await _load(rollouts, rollout_id)
    if rollout.status is not RolloutStatus.FAILED:
        refused = RolloutStateRefused(rollout_id, rollout.status, RolloutStatus.RUNNING)
        raise StatusConflict(str(refused), rolloutStatus=rollout.status.value)
    # The pass is recorded only once no run is open, so the new run surely starts: a row RUNNING
    # behind a refused start would refuse every later retry-failed.
    if not await workflows.rollout_run_closed(rollout_id):
        raise StatusConflict(
            f"rollout {rollout_id}'s last run has not closed yet; try again in a moment",
            rolloutStatus=rollout.status.value,
        )
    try:
        await rollouts.new_pass(rollout_id, principal.subject)
    except RolloutStateRefused as refused:
        raise StatusConflict(str(refused), rolloutStatus=refused.current.value) from None
    run = rollout_input(rollout_id, rollout.request, settings, principal.subject)
    await start_run(workflows, rollouts, run)
    return await _load(rollouts, rollout_id)
