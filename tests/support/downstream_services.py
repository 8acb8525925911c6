"""Downstream services (real HTTP servers) for the integration and browser tests: scripted
ones, and the reference service as backend-service and auth-service, over HTTP or in consumer
mode (commands from NATS JetStream, signed replies). A pytest plugin, listed in
tests/conftest.py's `pytest_plugins`, so every test folder can ask for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from examples.downstream_service.app import create_app as create_downstream_app
from examples.downstream_service.consumer import CommandConsumer
from examples.downstream_service.settings import DownstreamSettings
from infra.security.keys import load_private_key
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


@dataclass(frozen=True)
class ReferenceConsumer:
    """A reference service running in consumer mode (its HTTP endpoints serve too)."""

    name: str
    # The HTTP base URL: /healthz, and the HTTP endpoints, which still answer.
    url: str
    # The public half of the reply key (PEM), written beside it: what the platform verifies
    # this service's replies with.
    reply_public_key_file: Path
    app: FastAPI

    @property
    def consumer(self) -> CommandConsumer:
        """The running consumer (`ready` is set: its durable consumer is bound)."""
        consumer: CommandConsumer = self.app.state.consumer
        return consumer


def write_reply_public_key(reply_key_file: Path) -> Path:
    """Write the public half of `reply_key_file` to `<stem>.pub.pem` beside it; its path."""
    public = reply_key_file.with_name(f"{reply_key_file.stem}.pub.pem")
    public.write_bytes(
        load_private_key(reply_key_file)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


@contextmanager
def reference_consumer(
    name: str,
    nats_url: str,
    reply_key_file: Path,
    *,
    database_url: str,
    platform_key_file: Path,
    timeout: float = 20.0,
    **overrides: Any,
) -> Iterator[ReferenceConsumer]:
    """Run the reference service `name` in consumer mode, in a thread, until the block ends.

    It consumes `platform.commands.<name>` on `nats_url` with its durable consumer `<name>`,
    verifies tokens with `platform_key_file` (a PEM file, private or public, of the platform's
    signing key), migrates with its own role and database (`database_url`), and signs replies
    with `reply_key_file` (PEM private key, EC P-256 or RSA; e.g. from
    `infra.security.keys.generate_private_key`). Yields once the durable consumer is bound.
    `overrides` are further `DownstreamSettings` fields (`consumer_concurrency=2`, ...).

    The durable consumer outlives the block: commands left unacked on `<name>` (say by a test
    that stopped early) go to the next consumer of that name, which answers them as the
    protocol says (the platform ignores replies to commands it no longer waits for).
    """
    settings = DownstreamSettings(
        service_name=name,
        database_url=database_url,
        platform_public_key_file=platform_key_file,
        events_url=nats_url,
        reply_key_file=reply_key_file,
        **overrides,
    )
    app = create_downstream_app(settings)
    public = write_reply_public_key(reply_key_file)
    with serve(app, timeout=timeout) as url:
        consumer: CommandConsumer = app.state.consumer
        deadline = time.monotonic() + timeout
        while not consumer.ready.wait(0.05):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not bind its consumer on {nats_url}")
        yield ReferenceConsumer(name=name, url=url, reply_public_key_file=public, app=app)


@pytest.fixture
def start_reference_consumer(
    service_database_urls: dict[str, str], keys_dir: Path
) -> Callable[..., AbstractContextManager[ReferenceConsumer]]:
    """`reference_consumer` bound to this session's service roles and platform key:
    `with start_reference_consumer("backend-service", nats_url, reply_key) as service: ...`
    (name: backend-service or auth-service)."""

    def start(
        name: str, nats_url: str, reply_key_file: Path, **overrides: Any
    ) -> AbstractContextManager[ReferenceConsumer]:
        return reference_consumer(
            name,
            nats_url,
            reply_key_file,
            database_url=service_database_urls[name],
            platform_key_file=keys_dir / "platform-signing.pem",
            **overrides,
        )

    return start
