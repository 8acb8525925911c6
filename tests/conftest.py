"""Session-wide real infrastructure: one PostgreSQL server and one Temporal dev server.

Both are embedded (started from the wheels) unless the environment names existing ones:
`PLATFORM_DATABASE_URL` for PostgreSQL (a superuser URL) and `TEMPORAL_ADDRESS` for Temporal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.postgres import EmbeddedPostgres


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser URL of a real PostgreSQL server (database `postgres`)."""
    external = os.environ.get("PLATFORM_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tmp_path_factory.mktemp("pg")) / "data"
    with EmbeddedPostgres(data_dir, free_port(), durable=False) as server:
        yield server.url
