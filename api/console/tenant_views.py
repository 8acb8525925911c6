"""The tenant pages: the list at `/console/tenants` (counts by status, filters, paging, the
provision form) and one tenant at `/console/tenants/{id}` (fields, its move while MOVING,
migration ledger, audit trail, Temporal links and the actions its status allows: a move to
another server and its cancel among them).

Every read and every action is a call of the REST API as the signed-in operator
(api.console.internal): the console decides only what to *show*; whether an action is allowed
(scope, status) is the API's decision, and its problem line is what the operator reads.

Live parts: the list's table and the tenant's live fragment carry `data-poll` while something in
them is in flight, and the same URL answers the fragment alone (`?fragment=...` or the
`X-Console-Fragment` header console.js sends), so a provisioning is followed to ACTIVE, and a
move through its phases, without a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth import WRITE_SCOPE
from api.console.internal import api_for
from api.console.session import Session
from api.console.tenant_state import (
    allowed_actions,
    move_phase,
    move_targets,
    parse_status,
    poll_interval,
    retry_pending,
    rows_context,
    temporal_links,
)
from api.console.web import CONSOLE, Signed, checked_form, redirect, render, settings_of
from tenancy.models import SlaTier, StorageMode
from tenancy.status import TenantStatus

router = APIRouter(prefix=f"{CONSOLE}/tenants", include_in_schema=False)

# The list's filters, named as the API's query parameters so a console URL reads like the call.
LIST_FILTERS = ("status", "slaTier", "storageMode", "idPrefix")
SPEC_FIELDS = ("id", "name", "storageMode", "slaTier")
DELETE_FIELDS = ("graceSeconds", "reason", "confirm")
# The move form's server choice that leaves the target to placement (no `toServer`).
PLACEMENT = ""


def _wants_fragment(request: Request, name: str) -> bool:
    """Whether the request asks for the page's live fragment rather than the page."""
    return (
        request.query_params.get("fragment") == name
        or request.headers.get("x-console-fragment") == "1"
    )


def tenant_path(tenant_id: str) -> str:
    """The console page of one tenant."""
    return f"{CONSOLE}/tenants/{quote(tenant_id, safe='')}"


def _api_path(tenant_id: str, action: str = "") -> str:
    return f"/api/tenants/{quote(tenant_id, safe='')}{action}"


def _ui_url(request: Request) -> str | None:
    ui = settings_of(request).temporal_ui_url
    return None if ui is None else str(ui)


# ---- the list ---------------------------------------------------------------------------------


def _list_query(request: Request) -> dict[str, str]:
    """The list's filters and paging from the URL, empty ones left out; the id prefix is
    matched as ids are spelled (lowercase)."""
    wanted = {name: request.query_params.get(name, "").strip() for name in LIST_FILTERS}
    wanted["idPrefix"] = wanted["idPrefix"].lower()
    for name in ("cursor", "limit"):
        wanted[name] = request.query_params.get(name, "").strip()
    return {name: value for name, value in wanted.items() if value}


async def _list_page(
    request: Request,
    session: Session,
    query: Mapping[str, str],
    *,
    form: Mapping[str, str] | None = None,
    form_error: str | None = None,
    status_code: int | None = None,
) -> Response:
    async with api_for(request, session.token) as api:
        counts = await api.get("/api/stats/tenants")
        page = await api.get("/api/tenants", **query)
    return render(
        request,
        "tenants.html",
        session,
        status_code=status_code or (200 if page.ok else page.status),
        counts=counts.body if counts.ok else None,
        statuses=[status.value for status in TenantStatus],
        tiers=[tier.value for tier in SlaTier],
        modes=[mode.value for mode in StorageMode],
        query=query,
        form=form or {},
        form_error=form_error,
        # Without the write scope there is no form to show the refusal in.
        error=None if session.can(WRITE_SCOPE) else form_error,
        **rows_context(query, page),
    )


@router.get("")
async def tenant_list(request: Request, session: Signed) -> Response:
    """Counts by status, the filter form, a page of tenants and the provision form."""
    query = _list_query(request)
    if _wants_fragment(request, "rows"):
        async with api_for(request, session.token) as api:
            page = await api.get("/api/tenants", **query)
        return render(
            request, "_tenant_rows.html", session, query=query, **rows_context(query, page)
        )
    return await _list_page(request, session, query)


@router.post("")
async def provision(request: Request, session: Signed) -> Response:
    """Start provisioning (POST /api/tenants) and follow the new tenant on its page; a refused
    request shows the form again with what was typed and the API's reason."""
    form = await checked_form(request, session)
    spec = {name: form.get(name, "").strip() for name in SPEC_FIELDS}
    async with api_for(request, session.token) as api:
        answer = await api.post("/api/tenants", json=spec)
    if answer.ok:
        return redirect(request, tenant_path(spec["id"]), f"Provisioning of {spec['id']} started.")
    return await _list_page(
        request, session, {}, form=spec, form_error=answer.problem, status_code=answer.status
    )


# ---- one tenant -------------------------------------------------------------------------------


async def _tenant_response(
    request: Request,
    session: Session,
    tenant_id: str,
    *,
    fragment: bool = False,
    error: str | None = None,
    status_code: int = 200,
    delete_form: Mapping[str, str] | None = None,
) -> Response:
    """The tenant page (or its live fragment), with an action's refusal when there is one."""
    async with api_for(request, session.token) as api:
        answer = await api.get(_api_path(tenant_id))
        events = await api.get(_api_path(tenant_id, "/events")) if answer.ok else None
    if answer.status in (404, 422):
        return _not_found(request, session, tenant_id)
    if not answer.ok:
        return render(
            request,
            "error.html",
            session,
            status_code=answer.status,
            heading="Tenant unavailable",
            message=answer.problem,
            back=f"{CONSOLE}/tenants",
        )
    tenant: dict[str, Any] = answer.body
    status = parse_status(tenant.get("status"))
    trail: list[dict[str, Any]] = events.body.get("items", []) if events and events.ok else []
    pending = retry_pending(status, trail)
    interval = poll_interval(status, tenant, pending, datetime.now(UTC))
    actions = allowed_actions(status, session, pending, move_phase(tenant))
    targets: list[str] = []
    if actions.move:
        async with api_for(request, session.token) as api:
            targets = move_targets(await api.get("/api/storage-servers"), tenant)
    return render(
        request,
        "_tenant_live.html" if fragment else "tenant.html",
        session,
        status_code=status_code,
        error=error,
        tenant=tenant,
        events=list(reversed(trail)),
        events_problem=None if events is None or events.ok else events.problem,
        retry_pending=pending,
        actions=actions,
        move_targets=targets,
        placement=PLACEMENT,
        poll_url=f"{tenant_path(tenant_id)}?fragment=live" if interval else None,
        poll_interval=interval,
        temporal_links=temporal_links(_ui_url(request), request.state.temporal.namespace, tenant),
        delete_form=delete_form or {},
    )


def _not_found(request: Request, session: Session, tenant_id: str) -> Response:
    return render(
        request,
        "error.html",
        session,
        status_code=404,
        heading="Tenant not found",
        message=f"There is no tenant {tenant_id!r}.",
        back=f"{CONSOLE}/tenants",
    )


@router.get("/{tenant_id}")
async def tenant_page(request: Request, session: Signed, tenant_id: str) -> Response:
    """One tenant: fields, migration ledger, audit trail, Temporal links and actions."""
    return await _tenant_response(
        request, session, tenant_id, fragment=_wants_fragment(request, "live")
    )


async def _act(
    request: Request,
    session: Session,
    tenant_id: str,
    method: str,
    action: str,
    notice: str,
    *,
    params: Mapping[str, str] | None = None,
    json: Mapping[str, str] | None = None,
    delete_form: Mapping[str, str] | None = None,
) -> Response:
    """Call the API's action for the tenant; back to its page with a notice, or with the API's
    refusal (and its status code) when it refuses."""
    async with api_for(request, session.token) as api:
        answer = await api.call(
            method,
            _api_path(tenant_id, action),
            params=dict(params or {}),
            json=None if json is None else dict(json),
        )
    if answer.ok:
        return redirect(request, tenant_path(tenant_id), notice)
    if answer.status == 404:
        return _not_found(request, session, tenant_id)
    return await _tenant_response(
        request,
        session,
        tenant_id,
        error=answer.problem,
        status_code=answer.status,
        delete_form=delete_form,
    )


@router.post("/{tenant_id}/retry-migration")
async def retry_migration(request: Request, session: Signed, tenant_id: str) -> Response:
    """Re-run the failed services' migrations (MIGRATION_ERROR)."""
    await checked_form(request, session)
    return await _act(
        request, session, tenant_id, "POST", "/retry-migration", "Migration retry requested."
    )


@router.post("/{tenant_id}/retry-provisioning")
async def retry_provisioning(request: Request, session: Signed, tenant_id: str) -> Response:
    """Provision a tenant in PROVISION_ERROR again."""
    await checked_form(request, session)
    return await _act(
        request,
        session,
        tenant_id,
        "POST",
        "/retry-provisioning",
        "Provisioning retry requested.",
    )


@router.post("/{tenant_id}/retry-deletion")
async def retry_deletion(request: Request, session: Signed, tenant_id: str) -> Response:
    """Resume a failed purge (DELETION_ERROR)."""
    await checked_form(request, session)
    return await _act(
        request, session, tenant_id, "POST", "/retry-deletion", "Deletion retry requested."
    )


@router.post("/{tenant_id}/delete")
async def delete(request: Request, session: Signed, tenant_id: str) -> Response:
    """Schedule the tenant's deletion, once the operator has typed its id: a mismatch changes
    nothing (the browser's confirmation alone is one click away from a mistake)."""
    form = await checked_form(request, session)
    values = {name: form.get(name, "").strip() for name in DELETE_FIELDS}
    if values["confirm"] != tenant_id:
        return await _tenant_response(
            request,
            session,
            tenant_id,
            error=(
                f"Not deleted: the id typed to confirm ({values['confirm'] or 'nothing'}) is "
                f"not {tenant_id}. Nothing was changed."
            ),
            status_code=422,
            delete_form=values,
        )
    return await _act(
        request,
        session,
        tenant_id,
        "DELETE",
        "",
        f"Deletion of {tenant_id} scheduled.",
        params={"graceSeconds": values["graceSeconds"], "reason": values["reason"]},
        delete_form=values,
    )


@router.post("/{tenant_id}/restore")
async def restore(request: Request, session: Signed, tenant_id: str) -> Response:
    """Cancel a scheduled deletion (DELETION_SCHEDULED)."""
    form = await checked_form(request, session)
    reason = form.get("reason", "").strip()
    return await _act(
        request,
        session,
        tenant_id,
        "POST",
        "/restore",
        f"Deletion of {tenant_id} cancelled.",
        params={"reason": reason},
    )


@router.post("/{tenant_id}/move")
async def move(request: Request, session: Signed, tenant_id: str) -> Response:
    """Move an ACTIVE tenant to the chosen server, or where placement puts it."""
    form = await checked_form(request, session)
    target = form.get("toServer", PLACEMENT).strip()
    reason = form.get("reason", "").strip()
    body = {"toServer": target} if target != PLACEMENT else {}
    if reason:
        body["reason"] = reason
    where = f"to {target}" if target != PLACEMENT else "by placement"
    return await _act(
        request,
        session,
        tenant_id,
        "POST",
        "/move",
        f"Move of {tenant_id} started ({where}).",
        json=body,
    )


@router.post("/{tenant_id}/cancel-move")
async def cancel_move(request: Request, session: Signed, tenant_id: str) -> Response:
    """Roll a tenant's move back before its switch."""
    await checked_form(request, session)
    return await _act(
        request,
        session,
        tenant_id,
        "POST",
        "/cancel-move",
        f"Cancel of {tenant_id}'s move requested: it is rolled back to its source.",
    )
