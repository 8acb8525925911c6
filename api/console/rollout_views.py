"""The rollout pages: `/console/rollouts` (the list and the form that starts one) and
`/console/rollouts/{id}` (live progress per wave, failures, tenants, audit trail, and the
pause / resume / cancel / retry-failed buttons its status allows).

Every read and action is a call of `/api/rollouts...` with the operator's token
(api.console.internal), so the API's scopes and status rules decide; the pages only leave out
the buttons the token or the status would be refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from api.console.internal import ApiAnswer, ConsoleApi, api_for
from api.console.links import run_url
from api.console.rollout_form import (
    MAX_WAVE_ROWS,
    TIERS,
    RolloutForm,
    fresh_form,
    read_form,
    request_body,
    with_another_wave,
)
from api.console.session import Session
from api.console.web import (
    CONSOLE,
    SCOPES,
    Signed,
    checked_form,
    query_with,
    redirect,
    render,
    settings_of,
)
from tenancy.rollouts import (
    FINAL_ROLLOUT_STATUSES,
    RolloutStatus,
    RolloutTenantStatus,
)
from workflows.rollout.contracts import rollout_workflow_id

ROLLOUTS = f"{CONSOLE}/rollouts"
router = APIRouter(prefix=ROLLOUTS, include_in_schema=False)
_ROLLOUT_ID = re.compile(r"^[a-f0-9]{12}$")
# Rows of a rollout's tenants per page of its detail page.
TENANT_PAGE_SIZE = 50
Verb = Literal["pause", "resume", "cancel", "retry-failed"]


@dataclass(frozen=True)
class Action:
    """A button of the rollout page: the API verb it posts, and what it asks first."""

    verb: str
    label: str
    confirm: str
    danger: bool = False


# Which actions each status allows, as the API's rules say (docs/operating/rollouts.md).
_PAUSE = Action("pause", "Pause", "Pause this rollout? Calls in flight finish; no new ones start.")
_RESUME = Action("resume", "Resume", "Resume this rollout with its next tenants?")
_CANCEL = Action(
    "cancel",
    "Cancel",
    "Cancel this rollout? Calls in flight finish; tenants not started stay pending. "
    "A cancelled rollout cannot be resumed.",
    danger=True,
)
_RETRY = Action(
    "retry-failed", "Retry failed", "Run this rollout's failed tenants again, as a new pass?"
)
ACTIONS: dict[RolloutStatus, tuple[Action, ...]] = {
    RolloutStatus.RUNNING: (_PAUSE, _CANCEL),
    RolloutStatus.PAUSED: (_RESUME, _CANCEL),
    RolloutStatus.HALTED: (_RESUME, _CANCEL),
    RolloutStatus.FAILED: (_RETRY,),
    RolloutStatus.SUCCEEDED: (),
    RolloutStatus.CANCELLED: (),
}
_DONE_NOTICES = {
    "pause": "Rollout {id} paused: calls in flight finish, no new ones start.",
    "resume": "Rollout {id} resumed.",
    "cancel": "Rollout {id} cancelled.",
    "retry-failed": "Rollout {id}: its failed tenants run again as pass {pass_number}.",
}


def in_flight(status: str | None) -> bool:
    """Whether a rollout in `status` may still change by itself or by another operator (then
    its page keeps polling): every status but the final ones."""
    return status not in {s.value for s in FINAL_ROLLOUT_STATUSES}


def actions_for(status: str, session: Session) -> tuple[Action, ...]:
    """The buttons a rollout in `status` shows to this operator."""
    if not session.can(SCOPES["rollouts_write"]):
        return ()
    try:
        return ACTIONS[RolloutStatus(status)]
    except ValueError:
        return ()


def temporal_run_url(request: Request, workflow_id: str) -> str | None:
    """The run in the Temporal Web UI, when `PLATFORM_TEMPORAL_UI_URL` is set."""
    ui = settings_of(request).temporal_ui_url
    return run_url(None if ui is None else str(ui), request.state.temporal.namespace, workflow_id)


async def _configured_services(request: Request, api: ConsoleApi) -> list[str]:
    """The configured services' names: from the API, or from the settings when the token
    may not read services (tenants:read) but may start rollouts."""
    answer = await api.get("/api/services")
    if answer.ok:
        return [item["service"] for item in answer.body.get("items", [])]
    return [service.name for service in settings_of(request).downstream_services]


def _status_filter(value: str | None, allowed: type[RolloutStatus | RolloutTenantStatus]) -> str:
    return value if value in {member.value for member in allowed} else ""


def _list_page(
    request: Request,
    session: Session,
    listed: ApiAnswer,
    status_filter: str,
    configured: list[str],
    form: RolloutForm | None = None,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    items = listed.body.get("items", []) if listed.ok else []
    settings = settings_of(request)
    return render(
        request,
        "rollouts.html",
        session,
        status_code=status_code,
        error=error,
        rollouts=items,
        list_problem=None if listed.ok else listed.problem,
        list_live=any(in_flight(item["status"]) for item in items),
        status_filter=status_filter,
        statuses=[status.value for status in RolloutStatus],
        configured=configured,
        form=form or fresh_form(configured),
        tiers=TIERS,
        max_waves=MAX_WAVE_ROWS,
        default_concurrency=settings.rollout_concurrency,
        default_ratio=settings.rollout_max_failure_ratio,
        query_with=query_with,
    )


@router.get("")
async def rollouts_page(
    request: Request,
    session: Signed,
    status: Annotated[str | None, Query()] = None,
    fragment: Annotated[str | None, Query()] = None,
) -> Response:
    """The newest rollouts (live while one is in flight) and the form that starts one."""
    status_filter = _status_filter(status, RolloutStatus)
    async with api_for(request, session.token) as api:
        listed = await api.get("/api/rollouts", status=status_filter)
        if fragment == "list":
            if not listed.ok:
                return Response(status_code=listed.status)
            items = listed.body.get("items", [])
            return render(
                request,
                "_rollout_list.html",
                session,
                rollouts=items,
                list_live=any(in_flight(item["status"]) for item in items),
                status_filter=status_filter,
                query_with=query_with,
            )
        configured = await _configured_services(request, api)
    return _list_page(request, session, listed, status_filter, configured)


@router.post("")
async def start_rollout(request: Request, session: Signed) -> Response:
    """Start a rollout from the form; on a refusal show the form again with its values."""
    posted = await checked_form(request, session)
    async with api_for(request, session.token) as api:
        configured = await _configured_services(request, api)
        state = read_form(posted, configured)
        if posted.get("action") == "add-wave":
            listed = await api.get("/api/rollouts")
            return _list_page(request, session, listed, "", configured, with_another_wave(state))
        body, problems = request_body(state)
        answer = None if problems else await api.post("/api/rollouts", json=body)
        if answer is not None and answer.ok:
            rollout = answer.body
            return redirect(
                request,
                f"{ROLLOUTS}/{rollout['id']}",
                f"Rollout {rollout['id']} started: {rollout['counts']['total']} tenants.",
            )
        listed = await api.get("/api/rollouts")
    error = "; ".join(problems) if answer is None else answer.problem
    return _list_page(
        request,
        session,
        listed,
        "",
        configured,
        state,
        error=f"The rollout was not started: {error}",
        status_code=422 if answer is None else answer.status,
    )


async def _live_context(
    request: Request, api: ConsoleApi, session: Session, rollout_id: str
) -> tuple[ApiAnswer, dict[str, Any]]:
    """What the live part of a rollout page shows: the rollout and its audit trail."""
    rollout = await api.get(f"/api/rollouts/{rollout_id}")
    if not rollout.ok:
        return rollout, {}
    events = await api.get(f"/api/rollouts/{rollout_id}/events")
    return rollout, {
        "rollout": rollout.body,
        "events": events.body.get("items", []) if events.ok else [],
        "events_problem": None if events.ok else events.problem,
        "live": in_flight(rollout.body["status"]),
        "actions": actions_for(rollout.body["status"], session),
        "live_url": f"{ROLLOUTS}/{rollout_id}?fragment=live",
    }


def _not_found(request: Request, session: Session, message: str, status_code: int) -> Response:
    return render(
        request,
        "error.html",
        session,
        status_code=status_code,
        heading="Rollout not found" if status_code == 404 else "Rollout unavailable",
        message=message,
        back=ROLLOUTS,
    )


async def _tenants_context(
    api: ConsoleApi, rollout_id: str, params: dict[str, str]
) -> dict[str, Any]:
    """One page of the rollout's tenants, filtered by result, and its paging links."""
    tenant_status = _status_filter(params.get("status"), RolloutTenantStatus)
    cursor = params.get("cursor", "")
    cursor = cursor if re.fullmatch(r"[0-9]{1,18}", cursor) else ""
    page = await api.get(
        f"/api/rollouts/{rollout_id}/tenants",
        status=tenant_status,
        cursor=cursor,
        limit=TENANT_PAGE_SIZE,
    )
    kept = {"status": tenant_status}
    next_cursor = page.body.get("nextCursor") if page.ok else None
    return {
        "tenants": page.body.get("items", []) if page.ok else [],
        "tenants_problem": None if page.ok else page.problem,
        "tenant_status": tenant_status,
        "first_page": query_with(kept) if cursor else None,
        "next_page": query_with(kept, cursor=next_cursor) if next_cursor else None,
        "tenants_url": f"{ROLLOUTS}/{rollout_id}?"
        + query_with({**kept, "cursor": cursor}, fragment="tenants"),
    }


async def _detail_page(
    request: Request,
    session: Session,
    rollout_id: str,
    params: dict[str, str],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    async with api_for(request, session.token) as api:
        rollout, live = await _live_context(request, api, session, rollout_id)
        if not rollout.ok:
            return _not_found(request, session, rollout.problem, rollout.status)
        tenants = await _tenants_context(api, rollout_id, params)
    return render(
        request,
        "rollout.html",
        session,
        status_code=status_code,
        error=error,
        tenant_statuses=[status.value for status in RolloutTenantStatus],
        temporal_url=temporal_run_url(request, rollout_workflow_id(rollout_id)),
        **tenants,
        **live,
    )


@router.get("/{rollout_id}")
async def rollout_page(
    request: Request,
    session: Signed,
    rollout_id: str,
    fragment: Annotated[str | None, Query()] = None,
) -> Response:
    """A rollout. Its live parts, which poll themselves again while the rollout is in flight:
    `?fragment=live` (status, waves, failures, actions, audit trail) and `?fragment=tenants`
    (the page of its tenants the query names)."""
    if not _ROLLOUT_ID.fullmatch(rollout_id):
        return _not_found(request, session, f"no rollout {rollout_id}", 404)
    params = dict(request.query_params)
    if fragment in ("live", "tenants"):
        async with api_for(request, session.token) as api:
            rollout, live = await _live_context(request, api, session, rollout_id)
            if not rollout.ok:
                # The script tries again later; a page reload shows the problem itself.
                return Response(status_code=rollout.status)
            if fragment == "live":
                return render(request, "_rollout_live.html", session, **live)
            tenants = await _tenants_context(api, rollout_id, params)
        return render(
            request,
            "_rollout_tenants.html",
            session,
            rollout=rollout.body,
            live=live["live"],
            **tenants,
        )
    return await _detail_page(request, session, rollout_id, params)


@router.post("/{rollout_id}/{verb}")
async def rollout_action(
    request: Request, session: Signed, rollout_id: str, verb: Verb
) -> Response:
    """Pause, resume, cancel or retry the failed tenants of a rollout, then show it again."""
    await checked_form(request, session)
    if not _ROLLOUT_ID.fullmatch(rollout_id):
        return _not_found(request, session, f"no rollout {rollout_id}", 404)
    async with api_for(request, session.token) as api:
        answer = await api.post(f"/api/rollouts/{rollout_id}/{verb}")
    if answer.ok:
        notice = _DONE_NOTICES[verb].format(
            id=rollout_id, pass_number=answer.body.get("passNumber", "")
        )
        return redirect(request, f"{ROLLOUTS}/{rollout_id}", notice)
    return await _detail_page(
        request,
        session,
        rollout_id,
        {},
        error=f"Could not {verb.replace('-', ' ')} the rollout: {answer.problem}",
        status_code=answer.status,
    )
