"""The Servers page, `/console/servers`: each configured storage server with its pool, state,
a fill bar of tenants against `maxTenants`, the worker's last check and the server's version
(`GET /api/storage-servers`) and its drain's progress, and cordon / uncordon, drain (with how
many moves at once) and cancel-drain forms for a token with `servers:write`.

Actions are calls of `/api/storage-servers/{name}/...` with the operator's token
(api.console.internal), so the API's scope and state rules decide; the page only leaves out the
buttons the token would be refused.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.internal import api_for
from api.console.session import Session
from api.console.web import CONSOLE, Signed, checked_form, redirect, render
from workflows.drain.contracts import DEFAULT_CONCURRENCY, MAX_CONCURRENCY

SERVERS = f"{CONSOLE}/servers"
router = APIRouter(prefix=SERVERS, include_in_schema=False)
Verb = Literal["cordon", "uncordon", "drain", "cancel-drain"]
_DONE = {
    "cordon": "Storage server {name} cordoned: it takes no new tenant; its own are served.",
    "uncordon": "Storage server {name} uncordoned: it takes new tenants again.",
    "drain": "Storage server {name} is draining: its tenants are moved off it.",
    "cancel-drain": "The drain of {name} is cancelled: moves under way finish; it is cordoned.",
}
# The API refuses longer reasons; the form says so before it is sent.
MAX_REASON = 500


async def _page(
    request: Request, session: Session, *, error: str | None = None, status_code: int = 200
) -> Response:
    async with api_for(request, session.token) as api:
        answer = await api.get("/api/storage-servers")
    return render(
        request,
        "servers.html",
        session,
        status_code=status_code if answer.ok else answer.status,
        error=error,
        servers=answer.body.get("items", []) if answer.ok else [],
        problem=None if answer.ok else answer.problem,
        max_reason=MAX_REASON,
        default_concurrency=DEFAULT_CONCURRENCY,
        max_concurrency=MAX_CONCURRENCY,
    )


@router.get("")
async def servers_page(request: Request, session: Signed) -> Response:
    """Every configured storage server."""
    return await _page(request, session)


@router.post("/{name}/{verb}")
async def server_action(request: Request, session: Signed, name: str, verb: Verb) -> Response:
    """Cordon, uncordon, drain or cancel the drain of a server (an empty reason is none; a
    drain's concurrency is passed as given, for the API to check), then show the page again."""
    form = await checked_form(request, session)
    reason = form.get("reason", "").strip()
    body: dict[str, object] = {"reason": reason} if reason else {}
    if verb == "drain":
        concurrency = form.get("concurrency", "").strip()
        body["concurrency"] = int(concurrency) if concurrency.isdigit() else concurrency
    async with api_for(request, session.token) as api:
        answer = await api.post(f"/api/storage-servers/{name}/{verb}", json=body)
    if answer.ok:
        return redirect(request, f"{SERVERS}#{name}", _DONE[verb].format(name=name))
    return await _page(
        request,
        session,
        error=f"Could not {verb} {name}: {answer.problem}",
        status_code=answer.status,
    )
