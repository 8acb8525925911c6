"""The console in a real browser: the system Chromium driven by Playwright, against the real
stack (API under uvicorn, a real worker, PostgreSQL, Temporal, real downstream services).

Playwright cannot download its own browser here, so it drives Debian's `chromium` (or the
executable in `PLATFORM_CHROMIUM`). Without one these tests are skipped with a reason that says
so; `.ci/run` installs Chromium and sets `PLATFORM_REQUIRE_BROWSER=1`, which turns a missing
browser into a failure, so CI never passes on skipped browser tests.

Screenshots of the main pages are kept under `test-artifacts/console/` (or
`$PLATFORM_TEST_ARTIFACTS/console/`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from temporalio.client import Client

from api.auth import (
    DELETE_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    WRITE_SCOPE,
)
from api.main import create_app
from devstack.browser import LAUNCH_ARGS, find_chromium
from devstack.tokens import mint
from tenancy.settings import Settings
from tests.conftest import running_worker
from tests.support.servers import serve

ALL_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)
READ_ONLY = (READ_SCOPE, ROLLOUTS_READ_SCOPE)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The browser executable, or a skip that says plainly why (a failure when required)."""
    found = find_chromium()
    if found is None:
        reason = (
            "browser tests skipped: no Chromium found (install Debian's `chromium`: "
            "apt-get install -y chromium, or set PLATFORM_CHROMIUM)"
        )
        if os.environ.get("PLATFORM_REQUIRE_BROWSER") == "1":
            pytest.fail(reason.replace("skipped", "required"), pytrace=False)
        pytest.skip(reason)
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the session; each test gets its own context (cookies)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_executable,
            headless=True,
            args=list(LAUNCH_ARGS),
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go (kept after the run, ignored by git)."""
    root = Path(os.environ.get("PLATFORM_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder = root / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@asynccontextmanager
async def console_stack(client: Client, settings: Settings) -> AsyncIterator[str]:
    """Worker + API (with the console) under uvicorn; yields the API's base URL."""
    async with running_worker(client, settings):
        with serve(create_app(settings)) as base_url:
            yield base_url


@dataclass
class Console:
    """A browser tab on the console of a running stack, and tokens of its identity provider."""

    base_url: str
    page: Page
    context: BrowserContext
    keys_dir: Path
    artifacts: Path

    def token(self, *scopes: str, subject: str = "operator", **options: Any) -> str:
        """A token of the test identity provider (all console scopes unless given)."""
        return mint(
            self.keys_dir / "idp.pem",
            subject=subject,
            scopes=scopes or ALL_SCOPES,
            audience="platform-service",
            **options,
        )

    def url(self, path: str) -> str:
        """An absolute URL of this stack."""
        return f"{self.base_url}{path}"

    async def open(self, path: str) -> None:
        """Load a page of the console."""
        await self.page.goto(self.url(path))

    async def sign_in(self, token: str | None = None, *, then: str = "/console") -> None:
        """Sign in through the form, as an operator would, and land on `then`."""
        await self.open(f"/console/sign-in?next={then}")
        await self.page.get_by_label("Bearer token").fill(token or self.token())
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(self.url(then))

    async def screenshot(self, name: str) -> Path:
        """Keep a full-page screenshot as a test artifact."""
        target = self.artifacts / f"{name}.png"
        await self.page.screenshot(path=str(target), full_page=True)
        return target


@pytest_asyncio.fixture(loop_scope="session")
async def open_console(
    browser: Browser,
    temporal_client: Client,
    keys_dir: Path,
    artifacts_dir: Path,
) -> AsyncIterator[Callable[[Settings], Any]]:
    """`async with open_console(settings) as console:` a stack and a fresh browser context."""

    @asynccontextmanager
    async def opened(settings: Settings, **context_options: Any) -> AsyncIterator[Console]:
        async with console_stack(temporal_client, settings) as base_url:
            options = {"viewport": {"width": 1280, "height": 900}} | context_options
            context = await browser.new_context(**options)
            context.set_default_timeout(15_000)
            try:
                page = await context.new_page()
                yield Console(base_url, page, context, keys_dir, artifacts_dir)
            finally:
                await context.close()

    yield opened
