"""The containers switch's selection logic, and the Docker probe against fake engines."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.containers import (
    SERVICES,
    Service,
    container_mode,
    container_stack,
    docker_reachable,
    external_or_containers,
)


class Probe:
    """A docker_reachable stand-in that records whether it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


@pytest.mark.parametrize("reachable", [True, False])
def test_one_selects_containers_without_probing(reachable: bool) -> None:
    probe = Probe(reachable)
    assert container_mode({"PLATFORM_TEST_CONTAINERS": "1"}, probe) is True
    assert probe.calls == 0


@pytest.mark.parametrize("reachable", [True, False])
def test_zero_keeps_the_embedded_servers_without_probing(reachable: bool) -> None:
    probe = Probe(reachable)
    assert container_mode({"PLATFORM_TEST_CONTAINERS": "0"}, probe) is False
    assert probe.calls == 0


@pytest.mark.parametrize("value", [None, "", "  "])
@pytest.mark.parametrize("reachable", [True, False])
def test_unset_follows_the_engine(value: str | None, reachable: bool) -> None:
    environ = {} if value is None else {"PLATFORM_TEST_CONTAINERS": value}
    probe = Probe(reachable)
    assert container_mode(environ, probe) is reachable
    assert probe.calls == 1


@pytest.mark.parametrize("value", ["yes", "true", "2", "off"])
def test_other_values_are_refused_rather_than_guessed(value: str) -> None:
    with pytest.raises(ValueError, match="PLATFORM_TEST_CONTAINERS"):
        container_mode({"PLATFORM_TEST_CONTAINERS": value}, Probe(True))


@contextmanager
def fake_engine(reply: bytes | None) -> Iterator[Path]:
    """A Unix socket answering one request with `reply` (None: accept and never answer)."""
    # Short directory: a Unix socket path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        path = Path(folder) / "docker.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        requests: list[bytes] = []
        done = threading.Event()

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                requests.append(connection.recv(1024))
                if reply is not None:
                    connection.sendall(reply)
                else:
                    done.wait(5)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            done.set()
            thread.join(5)
            server.close()
        assert requests, "the probe never sent a request"
        assert requests[0].startswith(b"GET /_ping HTTP/1.0\r\n")


def test_an_engine_answering_the_ping_is_reachable() -> None:
    with fake_engine(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK") as path:
        assert docker_reachable({}, default_socket=path) is True


def test_docker_host_names_the_socket() -> None:
    with fake_engine(b"HTTP/1.1 200 OK\r\n\r\nOK") as path:
        missing = path.parent / "absent.sock"
        assert docker_reachable({"DOCKER_HOST": f"unix://{path}"}, default_socket=missing)


def test_an_engine_in_error_is_not_reachable() -> None:
    with fake_engine(b"HTTP/1.1 500 Internal Server Error\r\n\r\n") as path:
        assert docker_reachable({}, default_socket=path) is False


def test_a_silent_socket_is_not_reachable_within_the_timeout() -> None:
    with fake_engine(None) as path:
        assert docker_reachable({}, default_socket=path, timeout=0.2) is False


def test_no_engine_is_the_default_here(tmp_path: Path) -> None:
    assert docker_reachable({}, default_socket=tmp_path / "docker.sock") is False


def test_a_closed_tcp_engine_is_not_reachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert docker_reachable({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}) is False


def test_unprobed_schemes_are_not_reachable() -> None:
    assert docker_reachable({"DOCKER_HOST": "ssh://user@engine"}) is False


class FakeContainer:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def fake_services(log: list[str], failing: str | None = None) -> tuple[Service, ...]:
    def starter(env: str) -> Service:
        def start() -> tuple[FakeContainer, str]:
            if env == failing:
                raise RuntimeError(f"{env} did not start")
            log.append(f"start {env}")
            return FakeContainer(env, log), f"value-of-{env}"

        return Service(env, start)

    return tuple(starter(service.env) for service in SERVICES)


def test_containers_fill_in_only_what_the_environment_does_not_name() -> None:
    log: list[str] = []
    environ = {"TEMPORAL_ADDRESS": "temporal.example:7233"}
    with container_stack(environ, fake_services(log)) as overrides:
        assert overrides == {
            "PLATFORM_DATABASE_URL": "value-of-PLATFORM_DATABASE_URL",
            "PLATFORM_EVENTS_URL": "value-of-PLATFORM_EVENTS_URL",
            "PLATFORM_TEST_KAFKA_BOOTSTRAP": "value-of-PLATFORM_TEST_KAFKA_BOOTSTRAP",
        }
        assert not any(line.startswith("stop") for line in log)
    assert log[3:] == [
        "stop PLATFORM_TEST_KAFKA_BOOTSTRAP",
        "stop PLATFORM_EVENTS_URL",
        "stop PLATFORM_DATABASE_URL",
    ]


def test_a_container_that_fails_to_start_stops_those_started_before() -> None:
    log: list[str] = []
    with (
        pytest.raises(RuntimeError, match="PLATFORM_EVENTS_URL"),
        container_stack({}, fake_services(log, failing="PLATFORM_EVENTS_URL")),
    ):
        pass
    assert log == [
        "start PLATFORM_DATABASE_URL",
        "start TEMPORAL_ADDRESS",
        "stop TEMPORAL_ADDRESS",
        "stop PLATFORM_DATABASE_URL",
    ]


def test_without_an_engine_no_container_starts() -> None:
    log: list[str] = []
    with external_or_containers({}, probe=lambda _: False, services=fake_services(log)) as found:
        assert found is None
    assert log == []


def test_the_switch_starts_containers_even_without_a_detected_engine() -> None:
    log: list[str] = []
    environ = {"PLATFORM_TEST_CONTAINERS": "1"}
    with external_or_containers(
        environ, probe=lambda _: False, services=fake_services(log)
    ) as found:
        assert found is not None
        assert set(found) == {service.env for service in SERVICES}
    assert len(log) == 2 * len(SERVICES)


def test_the_probe_sees_the_same_environment() -> None:
    seen: list[dict[str, str]] = []
    environ = {"DOCKER_HOST": "unix:///nowhere.sock"}

    def probe(env: Mapping[str, str]) -> bool:
        seen.append(dict(env))
        return False

    with external_or_containers(environ, probe=probe, services=()) as found:
        assert found is None
    assert seen == [environ]
