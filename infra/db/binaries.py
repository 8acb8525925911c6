"""Where PostgreSQL's programs are: the `pgserver` wheel's, so a machine with only Python has them,
else the machine's own; and how the platform runs its clients (`pg_dump`, `pg_restore`).

A client program gets the server's URL as `--dbname` without the password (the command line is
visible to every user of the machine), the password in `PGPASSWORD`, and
`client_connection_check_interval`, so the session of a killed program does not live on while
it waits for a lock. `run_program` kills the program when the calling task is cancelled or
times out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_CHECK_CLIENT = "-c client_connection_check_interval=1000"
# Lines of a program's error output kept in a failure's message.
_STDERR_LINES = 3
_MAX_MESSAGE = 500


def _wheel_bin_dir() -> Path | None:
    # Located without importing pgserver: its import creates lock files and warns.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return candidate if (candidate / "postgres").exists() else None


def pg_binaries_dir() -> Path:
    """Folder holding `initdb` and `postgres`: the pgserver wheel's, else the machine's."""
    wheel = _wheel_bin_dir()
    if wheel is not None:
        return wheel
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("no PostgreSQL binaries: install the pgserver wheel")
    return Path(found).resolve().parent


def pg_program(name: str) -> Path:
    """One PostgreSQL program (`pg_dump`, `pg_restore`, ...): the pgserver wheel's, else the
    first on PATH. Raises `FileNotFoundError` when neither has it."""
    wheel = _wheel_bin_dir()
    if wheel is not None and (wheel / name).exists():
        return wheel / name
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name}: install the pgserver wheel or PostgreSQL's client")
    # Not resolved: Debian's /usr/bin/pg_dump is a wrapper that picks the version by its name.
    return Path(found)


@dataclass(frozen=True)
class ClientConnection:
    """How a client program reaches a database: its arguments, its environment and the
    password (to be masked in what the program prints)."""

    args: tuple[str, ...]
    env: dict[str, str]
    password: str | None


def client_connection(server_url: str, database: str, *, application_name: str) -> ClientConnection:
    """`--dbname` of `database` on the server of `server_url` (a libpq URL; raises psycopg's
    `ProgrammingError` when it is not one), shown as `application_name` in pg_stat_activity."""
    params = conninfo_to_dict(server_url)
    password = params.pop("password", None)
    params["dbname"] = database
    params.setdefault("application_name", application_name)
    params["options"] = f"{params.get('options') or ''} {_CHECK_CLIENT}".strip()
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return ClientConnection(
        args=("--no-password", f"--dbname={make_conninfo('', **params)}"),
        env=env,
        password=None if password is None else str(password),
    )


async def run_program(
    argv: list[str], env: dict[str, str], stdout: int = asyncio.subprocess.PIPE
) -> tuple[int, bytes, bytes]:
    """Run `argv` with `stdout` (a file descriptor, or captured); its exit status, output (when
    captured) and error output. The program is killed if this task is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out or b"", err


def error_summary(text: str, secret: str | None) -> str:
    """The last lines of a program's error output on one line, without `secret`."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    message = "; ".join(lines[-_STDERR_LINES:]) or "no error output"
    if secret:
        message = message.replace(secret, "***")
    return message[:_MAX_MESSAGE]
