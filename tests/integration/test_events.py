"""Lifecycle events through the outbox to a real NATS JetStream server: order and types of a
provisioning's events, nothing lost while the bus is away, one relay at a time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from api.gateway import WorkflowGateway
from devstack.nats import EmbeddedNats
from infra.db.deletions import DeletionRepository
from infra.db.outbox import OutboxRow
from infra.db.repository import TenantRepository
from infra.db.rollouts import RolloutRepository
from infra.events.bus import BusMessage, BusUnavailable
from infra.events.cloudevents import Family, event_type, tenant_event_name
from infra.events.nats import NatsBus
from infra.events.relay import OutboxRelay, RelayTiming, message_of, running_relay
from infra.temporal import worker_runtime
from tenancy.models import EventAction, SlaTier, StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.rollouts import RolloutAction, RolloutRequest, RolloutStatus, Selector, WaveSpec
from tenancy.settings import Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.events import EventTap, stored_count, tap, validate
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.scripted_service import ScriptedService
from tests.support.servers import free_port
from worker import build_worker, worker_activities
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CREATED = event_type(Family.TENANTS, tenant_event_name(EventAction.CREATED))
STATUS_CHANGED = event_type(Family.TENANTS, tenant_event_name(EventAction.STATUS_CHANGED))
FAST = RelayTiming(poll_interval=timedelta(milliseconds=50))
BUS_AWAY_SECONDS = 10.0


def spec(tenant_id: str | None = None) -> TenantSpec:
    return TenantSpec(
        id=tenant_id or unique_id("ev"),
        name="Events",
        storage_mode=StorageMode.SCHEMA,
        sla_tier=SlaTier.PREMIUM,
    )


def outbox_ids(db_url: str, tenant_id: str) -> list[str]:
    """The tenant's event ids in the outbox, in publish order."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM event_outbox WHERE subject_key = %s ORDER BY seq", (tenant_id,)
        ).fetchall()
    return [row[0] for row in rows]


def unpublished(db_url: str, tenant_ids: list[str]) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT count(*) FROM event_outbox
               WHERE subject_key = ANY(%s) AND published_at IS NULL""",
            (tenant_ids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def received(seen: EventTap, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return list(seen.events)

    return await eventually(probe, lambda events: len(events) >= count, timeout=timeout)


async def test_a_provisioning_s_events_arrive_in_order_with_their_types(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    tenants: TenantRepository,
    nats_url: str,
    platform_db_url: str,
) -> None:
    settings = make_settings(
        ("backend-service", backend[1]), events_backend="nats", events_url=nats_url
    )
    request = spec()
    async with (
        running_worker(temporal_client, settings),
        tap(nats_url, f"platform.tenants.{request.id}.>") as seen,
    ):
        await WorkflowGateway(temporal_client, settings).provision(request)
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        assert (await handle.result()).status is TenantStatus.ACTIVE
        audit = await tenants.events(request.id)
        events = await received(seen, len(audit))

    assert [(e["type"], e["data"]["oldStatus"], e["data"]["newStatus"]) for e in events] == [
        (CREATED, None, "PROVISIONING"),
        (STATUS_CHANGED, "PROVISIONING", "MIGRATING"),
        (STATUS_CHANGED, "MIGRATING", "ACTIVE"),
    ]
    assert [e["id"] for e in events] == outbox_ids(platform_db_url, request.id)
    for event, entry in zip(events, audit, strict=True):
        validate(event)
        assert event["subject"] == request.id
        assert event["source"] == settings.events_source
        assert event["data"]["storageMode"] == "SCHEMA"
        assert event["data"]["slaTier"] == "PREMIUM"
        assert event["data"]["actor"] == entry.actor
        assert event["type"] == event_type(Family.TENANTS, tenant_event_name(entry.action))
    assert unpublished(platform_db_url, [request.id]) == 0


async def test_nothing_is_lost_while_the_bus_is_stopped(
    tmp_path: Path,
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    backend: tuple[ScriptedService, str],
    platform_db_url: str,
) -> None:
    bus = EmbeddedNats(tmp_path / "nats", free_port())
    bus.start()
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(
        ("backend-service", backend[1]),
        events_backend="nats",
        events_url=bus.url,
        worker_metrics_address=address,
    )
    runtime = worker_runtime(settings)
    ids = [unique_id("away") for _ in range(3)]
    try:
        async with (
            worker_activities(settings, metric_meter=runtime.metric_meter) as activities,
            build_worker(temporal_client, settings, activities),
        ):
            # Whatever earlier tests left in the outbox goes out first.
            await eventually(
                lambda: scrape(address), lambda s: value(s, "platform_outbox_backlog") == 0
            )
            bus.stop()
            stopped = time.monotonic()
            gateway = WorkflowGateway(temporal_client, settings)
            for tenant_id in ids:
                await gateway.provision(spec(tenant_id))
            for tenant_id in ids:
                handle = temporal_client.get_workflow_handle_for(
                    ProvisionTenantWorkflow.run, provision_workflow_id(tenant_id)
                )
                assert (await handle.result()).status is TenantStatus.ACTIVE
            expected = {tenant_id: outbox_ids(platform_db_url, tenant_id) for tenant_id in ids}
            total = sum(len(found) for found in expected.values())
            assert total == 3 * len(ids)
            risen = await eventually(
                lambda: scrape(address),
                lambda s: (value(s, "platform_outbox_backlog") or 0) >= total,
            )
            assert (value(risen, "platform_outbox_oldest_seconds") or 0) > 0
            assert unpublished(platform_db_url, ids) == total
            # The outage lasts its full length, whatever the provisioning took.
            await asyncio.sleep(max(0.0, BUS_AWAY_SECONDS - (time.monotonic() - stopped)))
            assert unpublished(platform_db_url, ids) == total
            bus.start()
            fallen = await eventually(
                lambda: scrape(address),
                lambda s: value(s, "platform_outbox_backlog") == 0,
                timeout=30,
            )
            published = value(fallen, "platform_events_published_total", family="tenants")
            assert published is not None
            assert published >= total
        async with tap(bus.url, "platform.tenants.>") as seen:
            mine = await eventually(lambda: _mine(seen, ids), lambda events: len(events) >= total)
    finally:
        bus.stop()

    for tenant_id in ids:
        assert [e["id"] for e in mine if e["subject"] == tenant_id] == expected[tenant_id]
    assert unpublished(platform_db_url, ids) == 0


async def _mine(seen: EventTap, ids: list[str]) -> list[dict[str, Any]]:
    return [e for e in seen.events if e["subject"] in ids]


async def test_two_relays_at_once_one_publishes_and_the_other_takes_over(
    tenants: TenantRepository,
    platform_role_urls: tuple[str, str],
    nats_url: str,
) -> None:
    database_url = platform_role_urls[0]
    tenant = spec()
    first = OutboxRelay(database_url, NatsBus(nats_url), "/test", timing=FAST)
    second = OutboxRelay(database_url, NatsBus(nats_url), "/test", timing=FAST)
    subject = f"platform.tenants.{tenant.id}.>"
    async with tap(nats_url, subject) as seen, running_relay(first):
        await eventually(_value(lambda: first.holds_lock), bool)
        async with running_relay(second):
            await tenants.insert(tenant, "wf-two-relays", "run-1", [])
            for n in range(5):
                await tenants.record_event(tenant.id, "test", EventAction.RETRY_REQUESTED, f"{n}")
            await received(seen, 6)
            assert first.holds_lock
            assert not second.holds_lock
            assert second.published == 0
            # The holder goes; the standby takes the lock and the next events.
            await first_stops(first)
            await tenants.record_event(tenant.id, "test", EventAction.RETRY_REQUESTED, "5")
            events = await received(seen, 7)
            assert second.holds_lock
            # Counted once its stamp is written, a moment after the bus took the event.
            await eventually(_value(lambda: second.published >= 1), bool, timeout=10)

    assert len({e["id"] for e in events}) == len(events) == 7
    assert [e["data"]["reason"] for e in events[1:]] == [str(n) for n in range(6)]
    assert await stored_count(nats_url, subject) == 7


def _value(read: Callable[[], bool]) -> Callable[[], Any]:
    async def probe() -> bool:
        return read()

    return probe


async def first_stops(relay: OutboxRelay) -> None:
    relay.stop()
    await eventually(_value(lambda: not relay.holds_lock), bool, timeout=10)


async def test_every_kind_of_event_written_matches_its_schema(
    tenants: TenantRepository, platform_db_url: str
) -> None:
    tenant = spec()
    rollout_id = unique_id("ro")
    now = datetime.now(UTC)
    async with AsyncConnectionPool(platform_db_url, min_size=1, max_size=2) as pool:
        await tenants.insert(tenant, "wf-schemas", "run-1", [])
        await tenants.transition(tenant.id, TenantStatus.MIGRATING, None, "test")
        await tenants.record_event(tenant.id, "op", EventAction.RETRY_REQUESTED, "again")
        deletions = DeletionRepository(pool)
        await deletions.schedule(
            tenant.id,
            requested_by="op",
            reason="bye",
            requested_at=now,
            purge_at=now + timedelta(days=1),
        )
        await deletions.restore(tenant.id, "op", "changed my mind")
        rollouts = RolloutRepository(pool)
        await rollouts.create(
            rollout_id,
            RolloutRequest(selector=Selector(tenant_ids=[tenant.id])),
            ["backend-service"],
            [WaveSpec(name="all")],
            "op",
        )
        await rollouts.change_status(
            rollout_id, RolloutStatus.PAUSED, "op", RolloutAction.PAUSED, "lunch"
        )
    with psycopg.connect(platform_db_url) as conn:
        cur = conn.cursor(row_factory=class_row(OutboxRow))
        rows = cur.execute(
            """SELECT id::text AS id, seq, family, subject_key, name, event FROM event_outbox
               WHERE subject_key = ANY(%s) ORDER BY seq""",
            ([tenant.id, rollout_id],),
        ).fetchall()
    events = [json.loads(message_of(row, "/test").body) for row in rows]
    for event in events:
        validate(event)
    assert [e["type"].split(".")[-2] for e in events] == [
        "created",
        "status-changed",
        "retry-requested",
        "deletion-requested",
        "status-changed",
        "deletion-cancelled",
        "status-changed",
        "started",
        "paused",
    ]
    assert {e["data"].get("slaTier") for e in events[:7]} == {"PREMIUM"}
    assert [e["data"]["status"] for e in events[7:]] == ["RUNNING", "PAUSED"]
    assert events[7]["data"]["services"] == ["backend-service"]
    assert events[3]["data"]["reason"] == "bye"


class RefusingOnceBus:
    """A bus that refuses one chosen event once (as a bus going away would), else acks."""

    def __init__(self, refuse: Callable[[BusMessage], bool]) -> None:
        self.acked: list[BusMessage] = []
        self._refuse = refuse
        self._refused = False

    async def start(self) -> None:
        pass

    async def publish(self, message: BusMessage) -> None:
        if not self._refused and self._refuse(message):
            self._refused = True
            raise BusUnavailable("bus went away")
        self.acked.append(message)

    async def close(self) -> None:
        pass


async def test_a_refused_event_stays_and_what_was_acked_before_it_is_stamped(
    tenants: TenantRepository, platform_role_urls: tuple[str, str], platform_db_url: str
) -> None:
    tenant = spec()
    await tenants.insert(tenant, "wf-refused", "run-1", [])
    for n in range(4):
        await tenants.record_event(tenant.id, "op", EventAction.RETRY_REQUESTED, str(n))
    ids = outbox_ids(platform_db_url, tenant.id)
    bus = RefusingOnceBus(lambda message: message.event_id == ids[2])
    relay = OutboxRelay(platform_role_urls[0], bus, "/test", timing=FAST)
    async with running_relay(relay):
        await eventually(
            lambda: asyncio.to_thread(unpublished, platform_db_url, [tenant.id]),
            lambda left: left == 0,
        )
    assert [m.event_id for m in bus.acked if m.key == tenant.id] == ids
    with psycopg.connect(platform_db_url) as conn:
        rows = conn.execute(
            "SELECT id::text, attempts, last_error FROM event_outbox WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()
    tries = {event_id: (attempts, error) for event_id, attempts, error in rows}
    assert tries[ids[2]] == (2, "bus went away")
    assert {tries[i] for i in ids if i != ids[2]} == {(1, None)}
