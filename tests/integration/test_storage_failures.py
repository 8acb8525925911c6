"""A storage server that is down is waited out, with the last error in `statusReason`, for
as long as the outage lasts; it never ends the tenant in PROVISION_ERROR."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.storage import StorageActivities
from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from infra.db.servers import ServerRepository
from infra.db.storage import StorageAdmin
from infra.limits import ServerLimits
from infra.temporal import worker_runtime
from tenancy.contracts import CreateStorageInput
from tenancy.failures import FailureType
from tenancy.models import SlaTier, StorageMode, TenantSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port
from tests.support.storage import one_server_fleet, tenant_row
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_storage_outage_is_retried_with_the_reason_shown(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    tenants: TenantRepository,
    storage_db_url: str,
    service: tuple[ScriptedService, str],
) -> None:
    target = urlsplit(storage_db_url)
    proxy = TcpProxy(free_port(), target.hostname or "127.0.0.1", target.port or 5432)
    settings = make_settings(
        ("backend-service", service[1]), storage_database_url=through(storage_db_url, proxy.port)
    )
    tenant_id = unique_id("outage")
    try:
        async with running_worker(temporal_client, settings):
            await WorkflowGateway(temporal_client, settings).provision(
                TenantSpec(
                    id=tenant_id,
                    name="Outage",
                    storage_mode=StorageMode.SCHEMA,
                    sla_tier=SlaTier.BASIC,
                )
            )
            waiting = await eventually(
                lambda: tenants.get(tenant_id),
                lambda t: t is not None and t.status_reason is not None,
                timeout=60,
            )
            assert waiting is not None
            assert waiting.status is TenantStatus.PROVISIONING
            assert waiting.status_reason is not None
            # It names the server, which an operator with several looks at first.
            assert waiting.status_reason.startswith("storage creation on default failed, retrying")

            await proxy.start()
            active = await eventually(
                lambda: tenants.get(tenant_id),
                lambda t: t is not None and t.status is TenantStatus.ACTIVE,
                timeout=90,
            )
    finally:
        await proxy.stop()

    assert active is not None
    assert active.status_reason is None
    assert active.jdbc_url is not None
    assert len(service[0].calls_for(tenant_id)) == 1


@asynccontextmanager
async def pool_to_nowhere(url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A real pool whose server refuses every connection: waits end in `PoolTimeout`."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        through(url, free_port()),
        open=False,
        min_size=1,
        timeout=0.5,
        reconnect_timeout=1,
        kwargs={"autocommit": True},
    )
    async with pool:
        yield pool


# Every tier to the one server's pool, as without PLATFORM_PLACEMENT.
PLACEMENT = Settings(database_url="postgresql://u@db:5432/m").placement_map()


async def storage_failure(
    activities: StorageActivities, tenant_id: str, meter: MetricMeter = MetricMeter.noop
) -> ApplicationError:
    env = ActivityEnvironment()
    env.metric_meter = meter
    env.info = dataclasses.replace(
        env.info, started_time=datetime.now(UTC), start_to_close_timeout=timedelta(minutes=2)
    )
    with pytest.raises(ApplicationError) as raised:
        await env.run(
            activities.create_storage,
            CreateStorageInput(tenant_id=tenant_id, mode=StorageMode.SCHEMA),
        )
    return raised.value


async def test_a_metadata_outage_does_not_change_how_a_storage_failure_fails(
    make_settings: Callable[..., Settings],
    storage_db_url: str,
    platform_db_url: str,
    tenants: TenantRepository,
    servers: ServerRepository,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    # The runtime serves the endpoint as long as it lives: keep it referenced.
    runtime = worker_runtime(make_settings(worker_metrics_address=address))
    meter = runtime.metric_meter
    tenant_id = unique_id("both")
    async with pool_to_nowhere(storage_db_url) as storage, pool_to_nowhere(platform_db_url) as meta:
        await tenant_row(tenants, tenant_id)
        fleet = one_server_fleet(StorageAdmin(storage, storage_db_url), storage_db_url, servers)
        alone = await storage_failure(
            StorageActivities(fleet, servers, tenants, ServerLimits(1), PLACEMENT),
            tenant_id,
            meter,
        )
        # The tenant is placed (its server read from the metadata database that answers);
        # the note of the failure on the tenant's row is what cannot be written.
        both = await storage_failure(
            StorageActivities(fleet, servers, TenantRepository(meta), ServerLimits(1), PLACEMENT),
            tenant_id,
            meter,
        )
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(f"http://{address}/metrics")).text

    for failure in (alone, both):
        assert failure.type == FailureType.STORAGE_FAILED
        assert not failure.non_retryable
        assert failure.message.startswith("storage creation on default failed, retrying: ")
    assert alone.message == both.message
    # No SQLSTATE: the pool never got a connection.
    counted = [
        line.rpartition(" ")[2]
        for line in exposition.splitlines()
        if line.startswith("platform_storage_errors{")
        and 'kind="transient"' in line
        and 'sqlstate="none"' in line
    ]
    assert counted == ["2"], exposition
