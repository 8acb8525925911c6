"""Supervision of the `make dev` children: start, watch, and stop them last-first."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STOP_TIMEOUT = 20.0
_log = logging.getLogger("devstack.dev")


class DevStackError(Exception):
    """The stack cannot start or keep running; the message says what and why."""


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived."""


def exit_status(code: int) -> str:
    """`code 3` or, for a negative Popen return code, the signal that ended the process."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"code {code}"


@dataclass
class Child:
    """A supervised process with its pid file; `essential` ones take the stack down."""

    name: str
    proc: subprocess.Popen[bytes]
    essential: bool
    pid_file: Path
    stop_with: Callable[[float], None] | None = None

    def stop(self) -> None:
        """Ask it to stop, wait, kill its process group if it will not, drop the pid file."""
        if self.proc.poll() is None:
            _log.info("stopping %s", self.name)
        if self.stop_with is not None:
            self.stop_with(STOP_TIMEOUT)
        elif self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _log.warning("%s did not stop in %ss; killing it", self.name, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.forget()

    def forget(self) -> None:
        """Remove the pid file, unless a later process (`make service`) has taken it over."""
        try:
            if self.pid_file.read_text().strip() == str(self.proc.pid):
                self.pid_file.unlink()
        except FileNotFoundError:
            pass


class Stack:
    """The children started so far, watched until a stop is requested, then stopped last first."""

    def __init__(self, run_dir: Path, cwd: Path, log_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.cwd = cwd
        # None: children write to this terminal; else each to `<log_dir>/<name>.log`.
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def install_signal_handlers(self) -> None:
        """Turn SIGINT/SIGTERM/SIGHUP into a stop request; children have their own sessions,
        so only this process sees the terminal's Ctrl-C and it decides the order."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: self.stopping.set())

    def spawn(self, name: str, args: list[str], env: dict[str, str], *, essential: bool) -> None:
        """Start `args` in its own session; its output goes to this terminal or its log file."""
        if self.log_dir is None:
            proc = subprocess.Popen(args, cwd=self.cwd, env=env, start_new_session=True)
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / f"{name}.log").open("ab") as log:
                proc = subprocess.Popen(
                    args,
                    cwd=self.cwd,
                    env=env,
                    start_new_session=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        self.adopt(name, proc, essential=essential)

    def adopt(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        *,
        essential: bool,
        stop: Callable[[float], None] | None = None,
    ) -> None:
        """Supervise a process started elsewhere."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.run_dir / f"{name}.pid"
        pid_file.write_text(f"{proc.pid}\n")
        self.children.append(Child(name, proc, essential, pid_file, stop))

    def check(self) -> None:
        """Raise if an essential child has exited; a reference service may (outage drills)."""
        for child in list(self.children):
            code = child.proc.poll()
            if code is None:
                continue
            child.forget()
            self.children.remove(child)
            if child.essential:
                raise DevStackError(f"{child.name} exited unexpectedly ({exit_status(code)})")
            _log.warning(
                "%s exited (%s); the rest keeps running. Bring it back with `make service NAME=%s`",
                child.name,
                exit_status(code),
                child.name,
            )

    def wait_until(self, what: str, probe: Callable[[], bool], timeout: float) -> None:
        """Poll `probe` until true, failing at the deadline or when a child dies."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if self.stopping.is_set():
                raise Interrupted
            if probe():
                return
            if time.monotonic() > deadline:
                raise DevStackError(f"{what} did not become ready within {timeout:.0f}s")
            self.stopping.wait(0.25)

    def supervise(self) -> None:
        """Watch the children until a stop is requested."""
        while not self.stopping.wait(0.25):
            self.check()

    def stop_all(self) -> None:
        """Stop every child, the last started first."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        _log.info("stopped")
