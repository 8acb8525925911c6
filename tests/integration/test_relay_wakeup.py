"""The relay is woken by a commit of new events (LISTEN/NOTIFY), not only by its next look:
with a look every minute, an event still reaches the bus within seconds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from devstack.roles import Layout
from infra.db.repository import TenantRepository
from infra.events.nats import NatsBus
from infra.events.relay import OutboxRelay, RelayTiming, running_relay
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tests.conftest import unique_id
from tests.support.events import EventTap, tap
from tests.support.polling import eventually
from tests.support.storage_fleet import own_metadata_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# Far longer than the test's deadlines: only a notification can wake the relay in time.
SLOW = RelayTiming(poll_interval=timedelta(minutes=1))


async def test_a_committed_event_wakes_the_idle_relay(
    pg_server_url: str, database_roles: Layout, nats_url: str
) -> None:
    # A metadata database of its own: no other test's relay holds its outbox lock.
    database_url = own_metadata_database(pg_server_url)
    relay = OutboxRelay(database_url, NatsBus(nats_url), "/test", timing=SLOW)
    tenant = TenantSpec(
        id=unique_id("wake"), name="Wake", storage_mode=StorageMode.SCHEMA, sla_tier=SlaTier.BASIC
    )
    async with (
        AsyncConnectionPool(database_url, min_size=1, max_size=2) as pool,
        tap(nats_url, f"platform.tenants.{tenant.id}.>") as seen,
        running_relay(relay),
    ):
        tenants = TenantRepository(pool)

        async def holding() -> bool:
            return relay.holds_lock

        await eventually(holding, bool)
        # Idle now: its outbox is empty, and its next look is a minute away.
        await tenants.insert(tenant, "wf-wake", "run-1", [])
        first = await eventually(lambda: _events(seen), lambda e: len(e) >= 1, timeout=10)
        await tenants.record_event(tenant.id, "op", EventAction.RETRY_REQUESTED, "again")
        both = await eventually(lambda: _events(seen), lambda e: len(e) >= 2, timeout=10)

    assert first is not None
    assert both is not None
    assert [e["data"]["tenantId"] for e in both] == [tenant.id, tenant.id]
    assert relay.published >= 2


async def _events(seen: EventTap) -> list[dict[str, Any]]:
    return list(seen.events)
