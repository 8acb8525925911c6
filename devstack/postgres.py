"""An embedded PostgreSQL server run as a child process, for `make dev` and the test suite.

The binaries come from the `pgserver` wheel, so a machine with only Python can run it; the
machine's own `initdb`/`postgres` are the fallback. PostgreSQL refuses to run as root, so as
root the server runs as an unprivileged system user that owns the data folder.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

from infra.db.binaries import pg_binaries_dir

_log = logging.getLogger(__name__)
SERVICE_USER = "pgserver"
SUPERUSER = "postgres"


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    added = subprocess.run(
        ["useradd", "--system", "--no-create-home", SERVICE_USER],
        check=False,
        capture_output=True,
    )
    try:
        # Another process (a parallel test worker) may have added it first: then useradd
        # fails, and the user is there all the same.
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        added.check_returncode()
        raise


def _open_path_for(path: Path) -> None:
    """Let another user traverse every folder leading to `path` (root only)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        folder.chmod(mode | 0o055)


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` (TCP only)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        durable: bool = True,
        superuser_password: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        # With a password every connection must give one (scram-sha-256), as a real server
        # asks; without, loopback is trusted.
        self.superuser_password = superuser_password
        self._bin = pg_binaries_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        """Superuser URL (trust authentication on loopback unless a password is set)."""
        secret = f":{quote(self.superuser_password, safe='')}" if self.superuser_password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/postgres"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running server process (after `start`), for a supervisor to watch."""
        if self._proc is None:
            raise RuntimeError("PostgreSQL has not been started")
        return self._proc

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        entry = _ensure_service_user()
        self._user = SERVICE_USER
        _open_path_for(self._bin)
        _open_path_for(self._bin.parent / "lib")
        _open_path_for(self.data_dir.parent)
        for root, dirs, files in os.walk(self.data_dir):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        args = [str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
        args += ["--encoding=UTF8", "--locale=C"]
        if self.superuser_password is None:
            subprocess.run(
                [*args, "--auth=trust"], check=True, capture_output=True, user=self._user
            )
            return
        # initdb reads the password from a file; the server's user must be able to read it.
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as secret:
            secret.write(self.superuser_password)
            secret.flush()
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(secret.name, entry.pw_uid, entry.pw_gid)
            subprocess.run(
                [*args, "--auth=scram-sha-256", f"--pwfile={secret.name}"],
                check=True,
                capture_output=True,
                user=self._user,
            )

    def start(self, timeout: float = 30.0) -> str:
        """Initialise the cluster if needed, start it and wait until it accepts connections."""
        self._prepare()
        self._initdb()
        args = [
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
        ]
        if not self.durable:
            # Test clusters are thrown away, so trade crash safety for speed.
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log_file = (self.data_dir / "server.log").open("ab")
        self._proc = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            user=self._user,
            start_new_session=True,
        )
        log_file.close()
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL exited with {self._proc.returncode}:\n{log}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL not ready after {timeout}s: {last_error}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: roll back open transactions, write a checkpoint, exit."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("PostgreSQL did not stop in %ss; killing it", timeout)
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
