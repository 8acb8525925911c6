"""The platform's processes as real OS processes a test can kill: worker, API, Temporal.

Each `ManagedProcess` writes its merged output to a log file (no pipe to drain, nothing to
leak), runs in its own session so `kill()` (SIGKILL) reaches it and any child, and can be
started again with the same command and environment. Readiness is always polled with a
deadline; a process that exits while being waited for fails the wait with its log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from api.serve import EVENT_LOOP, HTTP_PROTOCOL
from devstack.temporal import dev_server_command

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ProcessExited(AssertionError):
    """The process ended while a test was waiting for it to become ready."""


class ManagedProcess:
    """One command, run as often as a test restarts it, logging to `log_file`."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        log_file: Path,
        ready: Callable[[ManagedProcess], Awaitable[bool]],
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.log_file = log_file
        self.starts = 0
        self._ready = ready
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc.pid

    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Everything every run of the process has written so far."""
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")

    def _spawn(self) -> None:
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(self.command)}\n".encode())
            log.flush()
            # The child holds its own copy of the descriptor; ours is closed on leaving.
            self._proc = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    async def start(self, timeout: float = START_TIMEOUT) -> ManagedProcess:
        """Start the process and wait until it is ready."""
        self._spawn()
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll the readiness probe until it accepts, the deadline passes or the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ProcessExited(f"{self.name} exited ({code}):\n{self.output()[-3000:]}")
            if await self._ready(self):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not ready within {timeout}s:\n{self.output()[-3000:]}"
                )
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """`kill -9` of the whole process group, then reap it: no clean-up code runs."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, and SIGKILL if the process has not exited by `timeout`."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    async def restart(self, timeout: float = START_TIMEOUT) -> ManagedProcess:
        """Start the same command again (after `kill` or `stop`) and wait until it is ready."""
        self.kill()
        return await self.start(timeout)


def child_env(**variables: str) -> dict[str, str]:
    """This process's environment without any platform, Temporal or downstream settings,
    plus `variables`: nothing from the caller's shell can point a child elsewhere. Lifecycle
    events are off unless `variables` turn them on (a developer's `make dev` may be listening
    on the default bus)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PLATFORM_", "TEMPORAL_", "DOWNSTREAM_", "OTEL_"))
    }
    return env | {"PLATFORM_EVENTS_BACKEND": "none"} | variables


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on `host:port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _log_line(text: str) -> Callable[[ManagedProcess], Awaitable[bool]]:
    async def ready(process: ManagedProcess) -> bool:
        # Only the current run's lines count: an earlier run also logged `text`.
        runs = process.output().split("--- start ")
        return text in runs[-1]

    return ready


def _http_ok(url: str) -> Callable[[ManagedProcess], Awaitable[bool]]:
    async def ready(_: ManagedProcess) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def _temporal_healthy(port: int) -> Callable[[ManagedProcess], Awaitable[bool]]:
    async def ready(_: ManagedProcess) -> bool:
        if not await asyncio.to_thread(port_open, port):
            return False
        try:
            client = await Client.connect(f"127.0.0.1:{port}")
            return await client.service_client.check_health(timeout=timedelta(seconds=2))
        except (RPCError, RuntimeError):
            return False

    return ready


def worker_process(env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    """`python worker.py`; ready once it logs that it polls its task queue."""
    return ManagedProcess(
        "worker",
        [sys.executable, "worker.py"],
        env,
        log_dir / "worker.log",
        _log_line("worker polling task queue"),
    )


def api_process(
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    *,
    log_level: str = "warning",
    http: str = HTTP_PROTOCOL,
) -> ManagedProcess:
    """`python -m uvicorn api.main:app` on `port` with the protocol and event loop `python -m
    api.serve` uses (`api.limits.LimitedHttpToolsProtocol` on uvloop, the request head limits in
    the protocol), or the protocol `http` names (`api.limits:LimitedH11Protocol`); ready once
    `/healthz` answers 200.

    uvicorn's access lines are written from `log_level="info"` on, as under `make dev`."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:app",
        "--http",
        http,
        "--loop",
        EVENT_LOOP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    return ManagedProcess(
        "api", command, env, log_dir / "api.log", _http_ok(f"http://127.0.0.1:{port}/healthz")
    )


def api_serve_process(env: Mapping[str, str], port: int, log_dir: Path) -> ManagedProcess:
    """`python -m api.serve` on `port`, as `make dev` and the image start the API (with
    `PLATFORM_API_WORKERS` processes); ready once `/healthz` answers 200."""
    command = [sys.executable, "-m", "api.serve", "--host", "127.0.0.1", "--port", str(port)]
    return ManagedProcess(
        "api", command, env, log_dir / "api.log", _http_ok(f"http://127.0.0.1:{port}/healthz")
    )


def temporal_process(db_file: Path, port: int, ui_port: int, log_dir: Path) -> ManagedProcess:
    """The Temporal dev server persisting to `db_file`; ready once its frontend answers the
    health check."""
    return ManagedProcess(
        "temporal",
        dev_server_command(db_file, port=port, ui_port=ui_port),
        child_env(),
        log_dir / "temporal.log",
        _temporal_healthy(port),
    )
