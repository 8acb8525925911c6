"""The gauges the alert rules read, against a real PostgreSQL and NATS: how long the
longest-waiting tenant has been in each status, rollouts by status, and which relay leads.
Each test has a metadata database of its own, so no other test's tenants, rollouts or relay
change what it counts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool
from temporalio.runtime import Runtime

from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.events.nats import NatsBus
from infra.events.relay import OutboxRelay, RelayTiming, running_relay
from infra.telemetry.metrics import (
    OUTBOX_BACKLOG,
    RELAY_LEADER,
    ROLLOUTS,
    TENANTS,
    TENANTS_OLDEST,
    tenant_gauge,
)
from infra.temporal import worker_runtime
from tenancy.rollouts import RolloutStatus
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import unique_id
from tests.support.event_stores import own_database
from tests.support.metrics import Samples, scrape, value
from tests.support.polling import eventually
from tests.support.servers import free_port
from tests.support.storage import tenant_row

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FAST = RelayTiming(poll_interval=timedelta(milliseconds=50))
WAITED = timedelta(minutes=10)


@pytest.fixture
def own_db(pg_server_url: str) -> str:
    return own_database(pg_server_url, "gauges")


@pytest_asyncio.fixture(loop_scope="session")
async def pool(own_db: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(own_db, min_size=1, max_size=4) as opened:
        yield opened


def metrics_runtime() -> tuple[Runtime, str]:
    """A runtime built as the worker builds its own, serving on a free port."""
    address = f"127.0.0.1:{free_port()}"
    return worker_runtime(Settings(worker_metrics_address=address)), address


async def gauge_at(
    address: str, name: str, accept: Callable[[float | None], bool], **labels: str
) -> float | None:
    """The gauge's value once `accept` takes it (within 15 s)."""

    async def probe() -> float | None:
        return value(await scrape(address), name, **labels)

    return await eventually(probe, accept, timeout=15)


async def refreshed(pool: AsyncConnectionPool[Any], runtime: Runtime, address: str) -> Samples:
    """The gauges as one refresh of the worker's periodic task sets them."""
    async with tenant_gauge(
        TenantRepository(pool), RolloutRepository(pool), runtime.metric_meter, timedelta(hours=1)
    ):
        return await eventually(
            lambda: scrape(address),
            lambda samples: value(samples, ROLLOUTS, status="RUNNING") is not None,
        )


def backdate(db_url: str, tenant_id: str, waited: timedelta) -> None:
    """Make the tenant's row and audit trail `waited` older, as if it was written then."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tenants SET created_at = created_at - %(w)s, updated_at = updated_at - %(w)s "
            "WHERE id = %(id)s",
            {"w": waited, "id": tenant_id},
        )
        conn.execute(
            "UPDATE tenant_events SET occurred_at = occurred_at - %(w)s WHERE tenant_id = %(id)s",
            {"w": waited, "id": tenant_id},
        )


async def test_the_oldest_tenant_of_a_status_and_an_empty_status_s_zero(
    own_db: str, pool: AsyncConnectionPool[Any]
) -> None:
    tenants = TenantRepository(pool)
    waiting, fresh = unique_id("old"), unique_id("new")
    await tenant_row(tenants, waiting)
    await tenant_row(tenants, fresh)
    backdate(own_db, waiting, WAITED)
    # A write within the status (a storage creation's retry notes its reason) moves the row's
    # updated_at, not the moment the tenant entered PROVISIONING.
    assert await tenants.note_provisioning_problem(waiting, "storage creation retried")

    runtime, address = metrics_runtime()
    samples = await refreshed(pool, runtime, address)

    assert value(samples, TENANTS, status="PROVISIONING") == 2
    oldest = value(samples, TENANTS_OLDEST, status="PROVISIONING")
    assert oldest is not None
    assert WAITED.total_seconds() <= oldest < WAITED.total_seconds() + 60
    for status in TenantStatus:
        if status is not TenantStatus.PROVISIONING:
            assert value(samples, TENANTS, status=status.value) == 0, status
            assert value(samples, TENANTS_OLDEST, status=status.value) == 0, status


async def test_the_oldest_counts_from_the_last_status_change(
    own_db: str, pool: AsyncConnectionPool[Any]
) -> None:
    tenants = TenantRepository(pool)
    tenant_id = unique_id("chg")
    await tenant_row(tenants, tenant_id)
    backdate(own_db, tenant_id, WAITED)
    # Into MIGRATING now: the wait in PROVISIONING no longer counts.
    await tenants.transition(tenant_id, TenantStatus.MIGRATING, None, "test")

    counts = await tenants.status_counts()

    assert counts[TenantStatus.PROVISIONING] == (0, timedelta(0))
    count, waited = counts[TenantStatus.MIGRATING]
    assert count == 1
    assert timedelta(0) <= waited < timedelta(minutes=1)


async def test_rollouts_by_status_count_a_halted_rollout(
    own_db: str, pool: AsyncConnectionPool[Any]
) -> None:
    with psycopg.connect(own_db, autocommit=True) as conn:
        for status in (RolloutStatus.HALTED, RolloutStatus.RUNNING, RolloutStatus.RUNNING):
            conn.execute(
                "INSERT INTO rollouts (id, status, services, request, created_by) "
                "VALUES (%s, %s, '{svc}', '{}', 'test')",
                (unique_id("ro"), status.value),
            )

    runtime, address = metrics_runtime()
    samples = await refreshed(pool, runtime, address)

    expected = {RolloutStatus.HALTED: 1, RolloutStatus.RUNNING: 2}
    for status in RolloutStatus:
        assert value(samples, ROLLOUTS, status=status.value) == expected.get(status, 0), status


async def test_the_relay_holding_the_lock_shows_1_and_the_standby_0(
    own_db: str, nats_url: str
) -> None:
    first_runtime, first_address = metrics_runtime()
    second_runtime, second_address = metrics_runtime()
    first = OutboxRelay(
        own_db, NatsBus(nats_url), "/test", meter=first_runtime.metric_meter, timing=FAST
    )
    second = OutboxRelay(
        own_db, NatsBus(nats_url), "/test", meter=second_runtime.metric_meter, timing=FAST
    )
    async with running_relay(first):
        await gauge_at(first_address, RELAY_LEADER, lambda v: v == 1)
        async with running_relay(second):
            # A standby records the backlog each time it fails to take the lock: once it has,
            # its 0 is a standby's, not a relay's that has not tried yet.
            await gauge_at(second_address, OUTBOX_BACKLOG, lambda v: v is not None)
            assert value(await scrape(second_address), RELAY_LEADER) == 0
            assert first.holds_lock
            assert not second.holds_lock
            assert value(await scrape(first_address), RELAY_LEADER) == 1
            # The holder stops: it shows 0, and the standby takes the lock and shows 1.
            first.stop()
            await gauge_at(first_address, RELAY_LEADER, lambda v: v == 0)
            await gauge_at(second_address, RELAY_LEADER, lambda v: v == 1)
            assert second.holds_lock
