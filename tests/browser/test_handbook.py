"""The handbook as a reader's browser sees it: built by MkDocs, served from localhost, it asks
no other host for anything (no web font, no CDN script), its search answers offline and its
status machine picture and runbooks render."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Request
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The handbook built strictly into a folder of its own, served over HTTP."""
    folder = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", folder],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    # In an app of its own: a bare StaticFiles does not answer uvicorn's lifespan messages.
    handbook = Starlette(routes=[Mount("/", StaticFiles(directory=folder, html=True))])
    with serve(handbook) as url:
        yield f"{url}/"


async def _open(browser: Browser, url: str) -> tuple[Page, list[str]]:
    context = await browser.new_context()
    page = await context.new_page()
    elsewhere: list[str] = []

    def note(request: Request) -> None:
        if urlsplit(request.url).hostname not in {"127.0.0.1", None}:
            elsewhere.append(request.url)

    page.on("request", note)
    await page.goto(url, wait_until="networkidle")
    return page, elsewhere


async def test_home_asks_no_other_host_and_search_answers_offline(
    browser: Browser, site: str, artifacts_dir: Path
) -> None:
    page, elsewhere = await _open(browser, site)
    assert await page.title() == "Platform Service handbook"
    await page.locator("label.md-search__icon, input.md-search__input").first.click()
    # Typed key by key: the theme searches on keyboard input, not on a value set at once.
    await page.locator("input.md-search__input").press_sequentially("reconciler", delay=20)
    results = page.locator(".md-search-result__item")
    await results.first.wait_for(timeout=15_000)
    assert await results.count() > 0
    await page.screenshot(path=artifacts_dir / "handbook-search.png")
    assert elsewhere == [], f"the handbook fetched from other hosts: {elsewhere}"


async def test_status_machine_picture_and_a_runbook_render(browser: Browser, site: str) -> None:
    page, elsewhere = await _open(browser, f"{site}concepts/lifecycle/")
    picture = page.locator("img[src$='status-machine.svg']")
    await picture.wait_for()
    assert await picture.evaluate("img => img.complete && img.naturalWidth > 0")
    runbook, elsewhere_too = await _open(browser, f"{site}runbooks/migration-errors/")
    assert await runbook.locator("h1").inner_text() != ""
    assert (elsewhere, elsewhere_too) == ([], [])
