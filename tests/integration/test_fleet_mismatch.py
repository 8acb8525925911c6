"""A configuration whose server list lacks a server that tenants live on is refused at start,
by the worker and by the API, for real: the error names the server and how many tenants it
holds, never a password of the configured servers' URLs, and nothing starts.

A metadata database of the test's own holds the tenants' rows (placed, as provisioning places
them, on servers of an earlier configuration)."""

from __future__ import annotations

import io
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.main import create_app
from infra.db.repository import TenantRepository
from infra.db.server_checks import FleetMismatch
from infra.db.servers import ServerRepository
from tenancy.fleet import StorageServer
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.support.logs import platform_logs_to
from tests.support.storage_fleet import own_metadata_database, platform_url
from worker import refuse_unknown_servers

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
PASSWORD = "never-print-this-1f0c"


def with_password(url: str) -> str:
    """`url` carrying `PASSWORD` (the embedded servers trust loopback and ignore it)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def server(name: str, url: str) -> StorageServer:
    return StorageServer.model_validate({"name": name, "url": url, "maxTenants": 100})


async def place_tenants(metadata_url: str, servers: list[StorageServer], count: int) -> None:
    """`count` tenants placed by the given (earlier) configuration, one of them DELETED."""
    async with AsyncConnectionPool(metadata_url, min_size=1, max_size=2) as pool:
        tenants, placements = TenantRepository(pool), ServerRepository(pool)
        placement = dict.fromkeys(SlaTier, servers[0].pool)
        for i in range(count):
            tenant_id = f"mismatch_{i}"
            spec = TenantSpec(
                id=tenant_id, name=tenant_id, storage_mode=StorageMode.SCHEMA, sla_tier="BASIC"
            )
            await tenants.insert(spec, f"wf-{tenant_id}", "run-1", [], "seed")
            await placements.place(tenant_id, servers, placement)
        # A DELETED tenant holds nothing: it is not counted.
        await tenants.transition("mismatch_0", TenantStatus.DELETION_SCHEDULED, None, "seed")
        await tenants.transition("mismatch_0", TenantStatus.DELETING, None, "seed")
        await tenants.transition("mismatch_0", TenantStatus.DELETED, None, "seed")


async def test_worker_and_api_refuse_a_list_that_lacks_a_server_with_tenants(
    pg_server_url: str,
    extra_pg_servers: list[str],
    make_settings: Callable[..., Settings],
) -> None:
    metadata_url = own_metadata_database(pg_server_url)
    kept = server("pg-kept", with_password(platform_url(extra_pg_servers[0])))
    gone = server("pg-gone", with_password(platform_url(extra_pg_servers[1])))
    # Placed while pg-gone was in the list, the only server of its pool: 3 tenants, 1 DELETED.
    await place_tenants(metadata_url, [gone], 3)
    settings = make_settings(
        database_url=metadata_url,
        storage_servers=[kept.model_dump(by_alias=True, mode="json")],
    )
    logs = io.StringIO()

    with platform_logs_to(logs):
        # What `python worker.py` runs after the metadata migrations, before any worker.
        with pytest.raises(FleetMismatch) as worker_refused:
            await refuse_unknown_servers(settings)
        app = create_app(settings)
        with pytest.raises(FleetMismatch) as api_refused:
            async with app.router.lifespan_context(app):
                pytest.fail("the API started")

    for refused in (worker_refused, api_refused):
        message = str(refused.value)
        assert "'pg-gone' (2 tenants)" in message
        assert "pg-kept" not in message
        assert PASSWORD not in message
    assert PASSWORD not in logs.getvalue()
    # The refused list registered nothing: only the earlier configuration's server has a row.
    async with await AsyncConnection.connect(metadata_url) as conn:
        cur = await conn.execute("SELECT name FROM storage_servers")
        registered = [row[0] for row in await cur.fetchall()]
    assert registered == ["pg-gone"]
