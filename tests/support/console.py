"""The console over plain HTTP as a browser drives it: the sign-in form with its nonce, the
session cookie it sets, and sign-out with the session's CSRF token."""

from __future__ import annotations

import httpx

from api.console.session import CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE, csrf_token_for


async def sign_in(
    http: httpx.AsyncClient, token: str, next_path: str = "/console"
) -> httpx.Response:
    """Open the sign-in form (its nonce cookie) and post `token` with it; the answer."""
    form = await http.get("/console/sign-in")
    assert form.status_code == 200, form.text
    nonce = http.cookies.get(SIGN_IN_COOKIE, path="/console")
    assert nonce, "the sign-in form set no nonce cookie"
    return await http.post(
        "/console/sign-in", data={"token": token, "nonce": nonce, "next": next_path}
    )


def session_cookie(http: httpx.AsyncClient) -> str | None:
    """The session cookie the client holds, if any."""
    return http.cookies.get(SESSION_COOKIE, path="/console")


async def sign_out(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """Press "Sign out" as the session holding `token`."""
    return await http.post("/console/sign-out", data={CSRF_FIELD: csrf_token_for(token)})
