"""The Chromium that the browser tests and the handbook's screenshots drive through Playwright,
which cannot download a browser of its own here: Debian's `chromium`, or `PLATFORM_CHROMIUM`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Root in a container has no user namespaces for the sandbox, and a small /dev/shm.
LAUNCH_ARGS = ("--no-sandbox", "--disable-dev-shm-usage")


def find_chromium(environ: Mapping[str, str] | None = None) -> str | None:
    """The browser to drive: `PLATFORM_CHROMIUM`, else the first one on PATH."""
    env = os.environ if environ is None else environ
    named = env.get("PLATFORM_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None
