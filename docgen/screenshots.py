"""The handbook's screenshots, taken with the Chromium the browser tests drive.

    python -m docgen.screenshots [--prometheus http://127.0.0.1:9090]

It builds the handbook into a temporary folder, serves it on loopback and photographs its home
page and a runbook into docs/images/; with `--prometheus` (a running `make dev`'s, say, while
the walkthrough's broken service has a tenant in MIGRATION_ERROR) also Prometheus' alerts page,
every group expanded.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.async_api import Page, async_playwright

from devstack.browser import LAUNCH_ARGS, find_chromium
from devstack.prometheus import alerts_url

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 860}


@contextmanager
def _serving(folder: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()


async def _shoot(page: Page, url: str, target: Path) -> None:
    await page.goto(url, wait_until="networkidle")
    await page.screenshot(path=target)
    print(f"wrote {target.relative_to(REPO)}")  # noqa: T201 - a command-line tool's output


async def _take(site: str, prometheus: str | None, browser_path: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=browser_path,
            headless=True,
            args=list(LAUNCH_ARGS),
        )
        page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
        await _shoot(page, site, IMAGES / "handbook-home.png")
        await _shoot(page, f"{site}runbooks/migration-errors/", IMAGES / "runbook.png")
        if prometheus is not None:
            await page.goto(alerts_url(prometheus.rstrip("/")), wait_until="networkidle")
            # Open the pending and firing alerts with their rule and annotations (the runbook
            # link), as an operator would; the classic UI folds them.
            for row in await page.locator(".alert-danger, .alert-warning").all():
                await row.click()
            # Its navigation bar is fixed: scrolled, a full-page shot would show it mid-page.
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=IMAGES / "prometheus-alerts.png", full_page=True)
            print(f"wrote {(IMAGES / 'prometheus-alerts.png').relative_to(REPO)}")  # noqa: T201
        await browser.close()


def main(argv: list[str] | None = None) -> int:
    """Build, serve and photograph the handbook (and Prometheus' alerts page when given)."""
    parser = argparse.ArgumentParser(prog="python -m docgen.screenshots", description=__doc__)
    parser.add_argument("--prometheus", help="a running Prometheus' base URL")
    args = parser.parse_args(argv)
    browser_path = find_chromium()
    if browser_path is None:
        parser.error(
            "no Chromium found (Debian: apt-get install -y chromium, or set PLATFORM_CHROMIUM)"
        )
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", folder],
            cwd=REPO,
            check=True,
        )
        with _serving(Path(folder)) as site:
            asyncio.run(_take(site, args.prometheus, browser_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
