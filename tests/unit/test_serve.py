"""`python -m api.serve` hands uvicorn the limited httptools protocol on uvloop (issue 22); the
served process itself is tested in tests/integration/test_api_workers.py and, with the same
protocol and loop, tests/integration/test_request_limits.py."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from uvicorn.importer import import_from_string

from api import serve
from api.limits import LimitedHttpToolsProtocol
from tenancy.settings import get_settings


def test_the_api_is_served_by_the_limited_httptools_protocol_on_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[tuple[str, dict[str, Any]]] = []

    def run(app: str, **options: Any) -> None:
        runs.append((app, options))

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv("PLATFORM_API_WORKERS", "1")
    get_settings.cache_clear()
    try:
        serve.main(["--port", "8123"])
    finally:
        get_settings.cache_clear()

    [(app, options)] = runs
    assert app == "api.main:app"
    assert import_from_string(options["http"]) is LimitedHttpToolsProtocol
    assert options["loop"] == "uvloop"
    assert options["port"] == 8123
