"""The end-of-run line that says whether the console's browser tests ran, as a pytest plugin.

Listed in tests/conftest.py's `pytest_plugins`, not in tests/browser/conftest.py: under
pytest-xdist (`make test`) the summary is written by the controller, which never collects and
so never loads the conftest files of test folders; it does load tests/conftest.py and its
plugins, and it holds every worker's reports.
"""

from __future__ import annotations

from typing import Any

BROWSER_TESTS = "tests/browser/"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly whether the console's browser tests ran."""
    browser_reports = [
        report
        for outcome in ("passed", "failed", "skipped", "error")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "nodeid", "").startswith(BROWSER_TESTS)
        and getattr(report, "when", "call") in ("call", "setup")
    ]
    if not browser_reports:
        return
    skipped = [r for r in browser_reports if r.skipped]
    ran = {r.nodeid for r in browser_reports if not r.skipped and r.when == "call"}
    if skipped and not ran:
        terminalreporter.write_line(
            f"console browser tests: SKIPPED ({len(skipped)}): no Chromium found; install "
            "Debian's chromium (apt-get install -y chromium) or set PLATFORM_CHROMIUM",
            yellow=True,
        )
    else:
        terminalreporter.write_line(f"console browser tests: {len(ran)} ran in Chromium")
