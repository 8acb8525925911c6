"""The tenant pages: the list at `/console/tenants` (counts by status, filters, paging, the
provision form) and one tenant at `/console/tenants/{id}` (fields, migration ledger, audit trail,
Temporal links and the actions its status allows).

Every read and every action is a call of the REST API as the signed-in operator
(api.console.internal): the console decides only what to *show*; whether an action is allowed
(scope, status) is the API's decision, and its problem line is what the operator reads.

Live parts: the list's table and the tenant's live fragment carry `data-poll` while something in
them is in flight, and the same URL answers the fragment alone (`?fragment=...` or the
`X-Console-Fragment` header console.js sends), so a provisioning is followed to ACTIVE without a
reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth import DELETE_SCOPE, WRITE_SCOPE
from api.console.internal import ApiAnswer, api_for
from api.console.session import Session
from api.console.web import CONSOLE, Signed, checked_form, query_with, redirect, render, settings_of
from tenancy.models import EventAction, SlaTier, StorageMode
from tenancy.naming import deletion_workflow_id
from tenancy.status import DELETABLE, TenantStatus

router = APIRouter(prefix=f"{CONSOLE}/tenants", include_in_schema=False)

# Statuses a workflow is moving the tenant out of by itself: their pages follow it live.
IN_FLIGHT = frozenset({TenantStatus.PROVISIONING, TenantStatus.MIGRATING, TenantStatus.DELETING})
# Statuses whose retry, once requested, the run takes up a moment later (the API answers first).
RETRYABLE = frozenset(
    {TenantStatus.MIGRATION_ERROR, TenantStatus.PROVISION_ERROR, TenantStatus.DELETION_ERROR}
)
FAST_POLL_MS = 1500
# A scheduled deletion waits out its grace period (days, usually): looked at now and then,
# and at the fast pace once its purge is due.
SLOW_POLL_MS = 5000
PURGE_DUE = timedelta(seconds=10)
# The list's filters, named as the API's query parameters so a console URL reads like the call.
LIST_FILTERS = ("status", "slaTier", "storageMode", "idPrefix")
SPEC_FIELDS = ("id", "name", "storageMode", "slaTier")
DELETE_FIELDS = ("graceSeconds", "reason", "confirm")


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


def _status(value: Any) -> TenantStatus | None:
    try:
        return TenantStatus(value)
    except ValueError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ---- the list ---------------------------------------------------------------------------------


def _list_query(request: Request) -> dict[str, str]:
    """The list's filters and paging from the URL, empty ones left out; the id prefix is
    matched as ids are spelled (lowercase)."""
    wanted = {name: request.query_params.get(name, "").strip() for name in LIST_FILTERS}
    wanted["idPrefix"] = wanted["idPrefix"].lower()
    for name in ("cursor", "limit"):
        wanted[name] = request.query_params.get(name, "").strip()
    return {name: value for name, value in wanted.items() if value}


def rows_context(query: Mapping[str, str], page: ApiAnswer) -> dict[str, Any]:
    """What `_tenant_rows.html` shows: the page's tenants, the next page's link (filters kept)
    and, while one of them is in flight, the URL that refreshes the table."""
    filters = {name: value for name, value in query.items() if name != "cursor"}
    items: list[dict[str, Any]] = page.body.get("items", []) if page.ok else []
    next_cursor = page.body.get("nextCursor") if page.ok else None
    in_flight = any(_status(item.get("status")) in IN_FLIGHT for item in items)
    return {
        "items": items,
        "problem": None if page.ok else page.problem,
        "next_query": query_with(filters, cursor=next_cursor) if next_cursor else None,
        "first_query": query_with(filters) if "cursor" in query else None,
        "poll_url": (
            f"{CONSOLE}/tenants?{query_with(query, fragment='rows')}" if in_flight else None
        ),
    }


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


@dataclass(frozen=True)
class Actions:
    """Which action forms the tenant page shows: allowed by the status and the token's scopes
    (the API checks both again)."""

    retry_migration: bool = False
    retry_provisioning: bool = False
    retry_deletion: bool = False
    delete: bool = False
    restore: bool = False

    @property
    def any(self) -> bool:
        """Whether any action is shown."""
        return any(vars(self).values())


def allowed_actions(status: TenantStatus | None, session: Session, pending: bool) -> Actions:
    """The actions of a tenant in `status` for this operator; a retry the run has not taken up
    yet is not offered twice."""
    write = session.can(WRITE_SCOPE) and not pending
    delete = session.can(DELETE_SCOPE)
    return Actions(
        retry_migration=write and status is TenantStatus.MIGRATION_ERROR,
        retry_provisioning=write and status is TenantStatus.PROVISION_ERROR,
        retry_deletion=delete and not pending and status is TenantStatus.DELETION_ERROR,
        delete=delete and status in DELETABLE,
        restore=delete and status is TenantStatus.DELETION_SCHEDULED,
    )


def retry_pending(status: TenantStatus | None, events: list[dict[str, Any]]) -> bool:
    """A retry was asked and the run has not moved the tenant yet: the newest event of a tenant
    in an error status is the request (the API answers before the run acts on it)."""
    if status not in RETRYABLE or not events:
        return False
    newest = events[-1].get("action")
    return newest in (EventAction.RETRY_REQUESTED.value, EventAction.RUN_ADOPTED.value)


def poll_interval(
    status: TenantStatus | None, tenant: Mapping[str, Any], pending: bool, now: datetime
) -> int | None:
    """How often (ms) the live fragment refreshes itself, or None when nothing is in flight."""
    if status in IN_FLIGHT or pending:
        return FAST_POLL_MS
    if status is TenantStatus.DELETION_SCHEDULED:
        purge_at = _parse_time((tenant.get("deletion") or {}).get("purgeAt"))
        due = purge_at is not None and purge_at - now <= PURGE_DUE
        return FAST_POLL_MS if due else SLOW_POLL_MS
    return None


def temporal_links(request: Request, tenant: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Links to the tenant's runs in the Temporal Web UI (none without PLATFORM_TEMPORAL_UI_URL):
    its provisioning run and, once a deletion is asked, its deletion run."""
    ui = settings_of(request).temporal_ui_url
    if ui is None:
        return []
    namespace = quote(request.state.temporal.namespace, safe="")
    base = f"{str(ui).rstrip('/')}/namespaces/{namespace}/workflows"
    links = [("Provisioning run", f"{base}/{quote(str(tenant['workflowId']), safe='')}")]
    if tenant.get("deletion"):
        deletion = deletion_workflow_id(str(tenant["id"]))
        links.append(("Deletion run", f"{base}/{quote(deletion, safe='')}"))
    return links


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
    status = _status(tenant.get("status"))
    trail: list[dict[str, Any]] = events.body.get("items", []) if events and events.ok else []
    pending = retry_pending(status, trail)
    interval = poll_interval(status, tenant, pending, datetime.now(UTC))
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
        actions=allowed_actions(status, session, pending),
        poll_url=f"{tenant_path(tenant_id)}?fragment=live" if interval else None,
        poll_interval=interval,
        temporal_links=temporal_links(request, tenant),
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
    delete_form: Mapping[str, str] | None = None,
) -> Response:
    """Call the API's action for the tenant; back to its page with a notice, or with the API's
    refusal (and its status code) when it refuses."""
    async with api_for(request, session.token) as api:
        answer = await api.call(method, _api_path(tenant_id, action), params=dict(params or {}))
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
