"""Scripted downstream services (real HTTP servers) shared by the integration modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tenancy.settings import Settings
from tests.support.scripted_service import ScriptedService
from tests.support.servers import serve


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[ScriptedService, str]]:
    """A scripted backend-service reporting version `backend-0002`, and its URL."""
    service = ScriptedService(version="backend-0002")
    with serve(service.app()) as url:
        yield service, url


@pytest.fixture(scope="module")
def auth() -> Iterator[tuple[ScriptedService, str]]:
    """A scripted auth-service reporting version `auth-0002`, and its URL."""
    service = ScriptedService(version="auth-0002")
    with serve(service.app()) as url:
        yield service, url


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    auth: tuple[ScriptedService, str],
) -> Settings:
    """This test's settings with both scripted services."""
    return make_settings(("backend-service", backend[1]), ("auth-service", auth[1]))


@pytest.fixture
def service() -> Iterator[tuple[ScriptedService, str]]:
    """One scripted service of this test alone (version `0002`), and its URL."""
    scripted = ScriptedService()
    with serve(scripted.app()) as url:
        yield scripted, url
