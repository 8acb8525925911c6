"""A process environment without the caller's configuration, for the tests of settings and of
what reads them (a pytest plugin, listed in tests/conftest.py's `pytest_plugins`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tenancy.settings import get_settings

# The platform's, Temporal's SDK, the reference service's and libpq's variables.
_PREFIXES = ("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_", "PG")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No configuration from the caller's shell, and no Settings cached before or after."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
