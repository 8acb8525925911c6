"""Signing in and out of the console, and the overview page at `/console`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api.auth import TokenVerifier
from api.console.internal import api_for
from api.console.session import (
    MAX_TOKEN_LENGTH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    clear_cookie,
    end_session,
    new_sign_in_nonce,
    set_cookie,
    sign_in_nonce_matches,
    token_lifetime,
    was_signed_out,
)
from api.console.web import (
    CONSOLE,
    CsrfRefused,
    Signed,
    checked_form,
    read_form,
    redirect,
    render,
    safe_next,
)
from api.errors import Unauthorized
from tenancy.status import TenantStatus

router = APIRouter(prefix=CONSOLE, include_in_schema=False)
# How long the sign-in form stays good: long enough to find and paste a token.
SIGN_IN_FORM_SECONDS = 15 * 60
# The overview shows the newest few rollouts and asks the API for no more.
OVERVIEW_ROLLOUTS = 5


def _sign_in_page(
    request: Request, next_path: str, *, error: str | None = None, status_code: int = 200
) -> Response:
    nonce = new_sign_in_nonce()
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=status_code,
        nonce=nonce,
        next_path=next_path,
        error=error,
    )
    set_cookie(response, request, SIGN_IN_COOKIE, nonce, max_age=SIGN_IN_FORM_SECONDS)
    return response


@router.get("/sign-in")
async def sign_in_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The sign-in page: paste a bearer token."""
    return _sign_in_page(request, safe_next(next_path))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Verify the pasted token as the API would; keep it in the session cookie if it verifies."""
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if not sign_in_nonce_matches(request, form.get("nonce")):
        # Another site's form, or a sign-in page left open past its time: a fresh one.
        return _sign_in_page(
            request,
            next_path,
            error="The sign-in form expired or did not come from this console; try again.",
            status_code=403,
        )
    token = "".join(form.get("token", "").split())
    if token.lower().startswith("bearer") and len(token) > len("bearer"):
        token = token[len("bearer") :]
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return _sign_in_page(request, next_path, error="Paste a bearer token.", status_code=400)
    verifier: TokenVerifier = request.state.verifier
    try:
        await verifier.verify(token)
    except Unauthorized as exc:
        return _sign_in_page(
            request, next_path, error=f"That token was refused: {exc.detail}.", status_code=401
        )
    if await was_signed_out(request, token):
        # Else a copy of a signed-out cookie would sign itself back in.
        return _sign_in_page(
            request,
            next_path,
            error="That token was signed out of the console; sign in with a new one.",
            status_code=401,
        )
    response = redirect(request, next_path)
    set_cookie(response, request, SESSION_COOKIE, token, max_age=token_lifetime(token))
    clear_cookie(response, request, SIGN_IN_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Signed) -> Response:
    """End the session on every API process (until its token expires) and forget the cookie.
    A proxy's session is the proxy's to end: its token is not remembered."""
    await checked_form(request, session)
    if not session.from_proxy:
        await end_session(request, session.token)
    response = redirect(request, f"{CONSOLE}/sign-in", "Signed out.")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.get("")
async def overview(request: Request, session: Signed) -> Response:
    """Counts of tenants by status, the newest rollouts and the services."""
    async with api_for(request, session.token) as api:
        counts = await api.get("/api/stats/tenants")
        rollouts = await api.get("/api/rollouts", limit=OVERVIEW_ROLLOUTS)
        services = await api.get("/api/services")
    return render(
        request,
        "overview.html",
        session,
        counts=counts.body if counts.ok else None,
        statuses=[status.value for status in TenantStatus],
        rollouts=rollouts.body.get("items", []) if rollouts.ok else None,
        rollouts_problem=None if rollouts.ok else rollouts.problem,
        services=services.body.get("items", []) if services.ok else None,
    )


__all__ = ["CsrfRefused", "router"]
