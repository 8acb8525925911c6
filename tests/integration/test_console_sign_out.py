"""Signing out of the console ends the session on every API process, restarts included: the
signed-out cookie is refused from then on. The token itself stays an API credential."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from api.auth import DEFAULT_LEEWAY, READ_SCOPE, ROLLOUTS_READ_SCOPE
from api.console.session import SESSION_COOKIE, token_digest, token_expiry
from api.main import create_app
from devstack.tokens import mint
from tenancy.settings import Settings
from tests.support.console import session_cookie, sign_in, sign_out
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def operator_token(keys_dir: Path, subject: str) -> str:
    return mint(
        keys_dir / "idp.pem",
        subject=subject,
        scopes=(READ_SCOPE, ROLLOUTS_READ_SCOPE),
        audience="platform-service",
    )


def replaying(base_url: str, token: str) -> httpx.AsyncClient:
    """A client that presents `token` as the session cookie, as a copied cookie would."""
    return httpx.AsyncClient(
        base_url=base_url, headers={"Cookie": f"{SESSION_COOKIE}={token}"}, timeout=30
    )


async def assert_refused_by_the_console(base_url: str, token: str) -> None:
    async with replaying(base_url, token) as stolen:
        page = await stolen.get("/console")
        fragment = await stolen.get(
            "/console/tenants?fragment=list", headers={"X-Console-Fragment": "1"}
        )
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/sign-in")
    assert fragment.status_code == 401
    # Presented the way a proxy presents tokens, it is refused all the same.
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        as_header = await http.get("/console", headers={"Authorization": f"Bearer {token}"})
    assert as_header.status_code == 303


async def test_a_signed_out_session_is_refused_on_every_api_process(
    make_settings: Callable[..., Settings], keys_dir: Path, platform_db_url: str
) -> None:
    settings = make_settings()
    token = operator_token(keys_dir, "sign-out-operator")

    with serve(create_app(settings)) as first:
        async with httpx.AsyncClient(base_url=first, timeout=30) as browser:
            signed_in = await sign_in(browser, token)
            assert signed_in.status_code == 303, signed_in.text
            assert session_cookie(browser) == token
            assert (await browser.get("/console")).status_code == 200

            signed_out = await sign_out(browser, token)
            assert signed_out.status_code == 303
            assert signed_out.headers["location"] == "/console/sign-in"
            assert session_cookie(browser) is None

        # Remembered while the verifier takes the token: its expiry and the leeway past it.
        async with await psycopg.AsyncConnection.connect(platform_db_url) as conn:
            cur = await conn.execute(
                "SELECT expires_at FROM console_sign_outs WHERE token_sha256 = %s",
                (token_digest(token),),
            )
            remembered = await cur.fetchone()
        assert remembered is not None
        assert remembered[0] == token_expiry(token) + DEFAULT_LEEWAY

        await assert_refused_by_the_console(first, token)
        # Pasting the signed-out token again does not bring the session back.
        async with httpx.AsyncClient(base_url=first, timeout=30) as again:
            refused = await sign_in(again, token)
        assert refused.status_code == 401
        assert "signed out" in refused.text
        assert session_cookie(again) is None

        # The token is the operator's own API credential (platformctl may hold it too):
        # signing out of the console leaves it to the identity provider and its expiry.
        async with httpx.AsyncClient(
            base_url=first, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            assert (await api.get("/api/tenants")).status_code == 200

    # Another API process on the same database (or this one restarted) knows it too.
    with serve(create_app(settings)) as second:
        await assert_refused_by_the_console(second, token)
        # A new token signs in as usual.
        fresh = operator_token(keys_dir, "sign-out-operator")
        async with httpx.AsyncClient(base_url=second, timeout=30) as browser:
            assert (await sign_in(browser, fresh)).status_code == 303
            assert (await browser.get("/console")).status_code == 200


async def test_signing_out_one_session_leaves_another_tokens_session_alone(
    make_settings: Callable[..., Settings], keys_dir: Path
) -> None:
    settings = make_settings()
    leaving, staying = (operator_token(keys_dir, name) for name in ("leaving", "staying"))

    with serve(create_app(settings)) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as one,
            httpx.AsyncClient(base_url=base, timeout=30) as other,
        ):
            assert (await sign_in(one, leaving)).status_code == 303
            assert (await sign_in(other, staying)).status_code == 303

            assert (await sign_out(one, leaving)).status_code == 303

            assert (await other.get("/console")).status_code == 200
            await assert_refused_by_the_console(base, leaving)
