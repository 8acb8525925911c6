"""Signing in and out of the console, and what a session may and may not do."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from api.console.session import SESSION_COOKIE
from tenancy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_a_page_asks_to_sign_in_and_a_good_token_gets_in(
    open_console: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_console(make_settings()) as console:
        await console.open("/console?from=test")
        # Not signed in: sent to the sign-in page, which will come back here.
        assert "/console/sign-in" in console.page.url
        await console.page.get_by_label("Bearer token").fill(console.token(subject="alice"))
        await console.page.get_by_role("button", name="Sign in").click()
        await console.page.wait_for_url(console.url("/console?from=test"))
        await expect(console.page.get_by_text("alice")).to_be_visible()

        cookie = next(c for c in await console.context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/console"
        assert cookie["secure"] is False  # plain HTTP here; Secure is set over HTTPS
        # Scripts of the page cannot read it.
        assert SESSION_COOKIE not in await console.page.evaluate("document.cookie")

        await console.open("/console")
        await expect(console.page.get_by_role("heading", name="Overview")).to_be_visible()
        await console.screenshot("overview")

        await console.page.get_by_role("button", name="Sign out").click()
        await expect(console.page.get_by_text("Signed out.")).to_be_visible()
        await console.open("/console")
        assert "/console/sign-in" in console.page.url


async def test_a_bad_token_is_refused_and_says_why(
    open_console: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_console(make_settings()) as console:
        await console.open("/console/sign-in")
        await console.page.get_by_label("Bearer token").fill(
            console.token(ttl=timedelta(seconds=-120))
        )
        await console.page.get_by_role("button", name="Sign in").click()
        await expect(console.page.get_by_role("alert")).to_contain_text("the token has expired")
        await console.page.get_by_label("Bearer token").fill("not-a-token")
        await console.page.get_by_role("button", name="Sign in").click()
        await expect(console.page.get_by_role("alert")).to_contain_text("malformed")
        assert not [c for c in await console.context.cookies() if c["name"] == SESSION_COOKIE]
        await console.screenshot("sign-in-refused")


async def test_sign_in_from_another_site_is_refused(
    open_console: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_console(make_settings()) as console:
        # A form posted without the sign-in page's own nonce (login CSRF).
        async with httpx.AsyncClient(base_url=console.base_url) as http:
            answer = await http.post(
                "/console/sign-in", data={"token": console.token(), "next": "/console"}
            )
        assert answer.status_code == 403
        assert SESSION_COOKIE not in answer.cookies


async def test_docs_and_redoc_load_their_assets_from_the_app(
    open_console: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_console(make_settings()) as console:
        # Anything the bundles would fetch from elsewhere (ReDoc's Redocly logo) must be
        # stopped by the page's policy in the browser, not merely fail for want of a network.
        foreign: list[str] = []
        blocked: list[str] = []

        def outside(url: str) -> bool:
            return not url.startswith((console.base_url, "blob:", "data:"))

        console.page.on("request", lambda r: foreign.append(r.url) if outside(r.url) else None)
        console.page.on(
            "requestfailed",
            lambda r: blocked.append(r.url) if (r.failure or "").lower() == "csp" else None,
        )
        await console.open("/docs")
        await expect(console.page.get_by_text("Platform Service").first).to_be_visible()
        await expect(console.page.locator(".opblock").first).to_be_visible()
        await console.screenshot("docs")
        await console.open("/redoc")
        await expect(
            console.page.get_by_role("heading", name="Platform Service").first
        ).to_be_visible()
        assert sorted(foreign) == sorted(blocked)
