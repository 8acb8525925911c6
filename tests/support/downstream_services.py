"""Downstream services (real HTTP servers) for the integration and browser tests: scripted
ones, and the reference service as backend-service and auth-service. A pytest plugin, listed in
tests/conftest.py's `pytest_plugins`, so every test folder can ask for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.settings import DownstreamSettings
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


@pytest.fixture(scope="module")
def reference_services(
    service_database_urls: dict[str, str], keys_dir: Path
) -> Iterator[list[tuple[str, str]]]:
    """backend-service and auth-service: the reference app with their own migration sets,
    accepting only calls signed with the platform's key."""

    def settings(name: str) -> DownstreamSettings:
        return DownstreamSettings(
            service_name=name,
            database_url=service_database_urls[name],
            platform_public_key_file=keys_dir / "platform-signing.pem",
        )

    with (
        serve(create_downstream_app(settings("backend-service"))) as backend,
        serve(create_downstream_app(settings("auth-service"))) as auth,
    ):
        yield [("backend-service", backend), ("auth-service", auth)]
