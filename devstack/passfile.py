"""libpq password files (`PGPASSFILE`): a service's credentials per host.

A tenant's `jdbcUrl` names its storage server's host and port and never a password; the
reference services connect as their own role everywhere, and each server may know that role
by a password of its own. libpq matches a connection without a password against the file's
`host:port:database:user:password` lines, first match wins; it ignores a file that others may
read, so it is written owner-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devstack.roles import Login


def _escaped(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def line(host: str, port: int, login: Login, *, database: str = "*") -> str:
    """The line giving `login`'s password on `host`:`port` (every database by default)."""
    fields = [host, str(port), database, login.role, login.password]
    return ":".join(_escaped(field) for field in fields)


def write(path: Path, lines: Sequence[str]) -> None:
    """Write `lines` to `path`, owner-only (0600) before a password is in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{text}\n" for text in lines))
