"""The reference services' credentials per host, as `make dev` hands them out, against two
PostgreSQL servers that check passwords (scram-sha-256): a URL without a password, and a
libpq password file (`PGPASSFILE`) with each server's own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from devstack import passfile
from devstack.postgres import EmbeddedPostgres
from devstack.roles import Layout, Login, apply_layout, login_url
from examples.downstream_service.models import StorageAddress
from examples.downstream_service.pools import StoragePools
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

ROLE = "backend_service"


@pytest.fixture
def checking_servers(tmp_path: Path) -> Iterator[list[tuple[EmbeddedPostgres, Login]]]:
    """Two servers that ask for passwords, each with the service's role, its password its own."""
    started: list[EmbeddedPostgres] = []
    servers = []
    try:
        for index in range(2):
            server = EmbeddedPostgres(
                tmp_path / f"pg-{index}",
                free_port(),
                durable=False,
                superuser_password=secrets.token_hex(8),
            )
            server.start()
            started.append(server)
            login = Login(ROLE, secrets.token_hex(16))
            apply_layout(server.url, Layout("tenants", "tenants", None, (login,)))
            servers.append((server, login))
        yield servers
    finally:
        for server in started:
            server.stop()


def test_a_service_reaches_each_server_with_that_servers_password(
    checking_servers: list[tuple[EmbeddedPostgres, Login]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (first, first_login), (second, second_login) = checking_servers
    own_url = login_url(first.url, Login(ROLE), ROLE)
    assert urlsplit(own_url).password is None
    # The servers do check: no password, no connection.
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(own_url, connect_timeout=5).close()

    path = tmp_path / "pgpass" / "backend-service"
    passfile.write(
        path,
        [
            passfile.line("127.0.0.1", first.port, first_login),
            passfile.line("127.0.0.1", second.port, second_login),
        ],
    )
    monkeypatch.setenv("PGPASSFILE", str(path))

    with psycopg.connect(own_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
    # As the reference service connects to a tenant's storage: the host and port from the
    # jdbcUrl, the rest from its own URL.
    pools = StoragePools(
        database_url=own_url,
        application_name="passfile-test",
        connect_timeout=timedelta(seconds=5),
        max_size=1,
        max_pools=4,
        max_idle=timedelta(seconds=30),
    )
    try:
        for server in (first, second):
            with pools.connection(StorageAddress("127.0.0.1", server.port, "tenants")) as conn:
                row = conn.execute("SELECT current_user, current_setting('port')").fetchone()
                assert row == (ROLE, str(server.port))
    finally:
        pools.close()

    # The line of one server does not open the other.
    passfile.write(path, [passfile.line("127.0.0.1", first.port, second_login)])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(own_url, connect_timeout=5).close()
