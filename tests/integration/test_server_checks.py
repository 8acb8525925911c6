"""The worker's periodic check of every storage server: recorded on the servers' rows (what the
API shows) and exported as gauges, an unreachable server reported as such."""

from __future__ import annotations

import pytest
from psycopg_pool import AsyncConnectionPool

from infra.db.repository import TenantRepository
from infra.db.server_checks import check_servers, refuse_missing_servers
from infra.db.servers import ServerRepository
from infra.temporal import worker_runtime
from tests.conftest import unique_id
from tests.support.metrics import scrape, value
from tests.support.servers import free_port
from tests.support.storage import tenant_row
from tests.support.storage_fleet import FleetStage
from tests.support.tcp_proxy import through

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_each_server_is_checked_and_a_dead_one_is_reported_down(
    fleet_stage: FleetStage,
) -> None:
    gone = fleet_stage.server("pg-zz-gone", 1, "shared", 10)
    # Nothing listens there.
    gone["url"] = through(gone["url"], free_port())
    address = f"127.0.0.1:{free_port()}"
    settings = fleet_stage.settings(
        (),
        servers=[fleet_stage.server("pg-up", 2, "shared", 7), gone],
        worker_metrics_address=address,
    )
    runtime = worker_runtime(settings)
    async with AsyncConnectionPool(settings.require_database_url(), min_size=1, max_size=2) as pool:
        servers = ServerRepository(pool)
        fleet = settings.storage_fleet()
        await refuse_missing_servers(fleet, servers)
        # One tenant placed on the live server.
        tenant_id = unique_id("chk")
        await tenant_row(TenantRepository(pool), tenant_id)
        assert await servers.place(tenant_id, fleet, settings.placement_map()) == "pg-up"
        before = await servers.records(["pg-up", "pg-zz-gone"])
        await check_servers(fleet, servers, runtime.metric_meter)
        after = await servers.records(["pg-up", "pg-zz-gone"])
    samples = await scrape(address)

    assert before["pg-up"].checked_at is None
    assert before["pg-up"].reachable is None
    live, dead = after["pg-up"], after["pg-zz-gone"]
    assert (live.reachable, live.check_error) == (True, None)
    assert live.server_version is not None
    assert live.server_version[:2].isdigit()
    assert live.checked_at is not None
    assert dead.reachable is False
    assert dead.check_error
    assert dead.server_version is None
    assert value(samples, "platform_storage_server_up", server="pg-up") == 1
    assert value(samples, "platform_storage_server_up", server="pg-zz-gone") == 0
    assert value(samples, "platform_storage_server_tenants", server="pg-up", pool="shared") == 1
    assert (
        value(samples, "platform_storage_server_tenants", server="pg-zz-gone", pool="shared") == 0
    )
    assert value(samples, "platform_storage_server_capacity", server="pg-up", pool="shared") == 7
