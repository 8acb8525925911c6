"""One consumer, one configuration (issue 19, point 9), against real NATS JetStream, Temporal and
PostgreSQL: workers of one task queue whose sets of event-driven services differ (a rolling
deploy that adds a service) never delete or re-create each other's reply consumers, a new
consumer does not replay the replies already in the stream, and each service's replies are
settled."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jwt
import nats
import pytest
import pytest_asyncio
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from temporalio.client import Client

from activities.replies import consuming_replies
from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from infra.events.command_bus import CommandBus, Handled, ReplyDelivery, consumer_name
from infra.events.commands import REPLIES_STREAM, reply_subject, streams
from infra.events.nats import declare_stream
from infra.temporal import connect_client
from tenancy.models import StorageMode, TenantSpec
from tenancy.settings import DownstreamService, Settings
from tenancy.status import TenantStatus
from tests.conftest import running_worker, unique_id
from tests.support.events_service import (
    ScriptedEventsService,
    reply_consumers,
    scripted_events_service,
)
from tests.support.logs import platform_logs_to
from tests.support.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

Services = tuple[ScriptedEventsService, ScriptedEventsService]


@pytest_asyncio.fixture(loop_scope="session")
async def services(nats_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    tag = uuid.uuid4().hex[:8]
    async with (
        scripted_events_service(nats_url, f"rc-a-{tag}", tmp_path) as first,
        scripted_events_service(nats_url, f"rc-b-{tag}", tmp_path) as second,
    ):
        yield first, second


def spec() -> TenantSpec:
    return TenantSpec(
        id=unique_id("rcon"), name="Consumers", storage_mode=StorageMode.SCHEMA, sla_tier="STANDARD"
    )


def over_events(
    make_settings: Callable[..., Settings], nats_url: str, *services: ScriptedEventsService
) -> Settings:
    return make_settings(
        downstream_services=tuple(
            DownstreamService(name=s.name, transport="events", reply_key_file=s.key_file)
            for s in services
        ),
        events_url=nats_url,
    )


async def provisioned(
    settings: Settings, gateway: WorkflowGateway, tenants: TenantRepository
) -> TenantSpec:
    request = spec()
    await gateway.provision(request)
    await eventually(
        lambda: tenants.get(request.id),
        lambda t: t is not None and t.status is TenantStatus.ACTIVE,
    )
    return request


def created(infos: dict[str, ConsumerInfo]) -> dict[str, object]:
    return {name: info.created for name, info in infos.items()}


def idle(infos: dict[str, ConsumerInfo]) -> bool:
    return all(not info.num_pending and not info.num_ack_pending for info in infos.values())


async def test_workers_of_different_services_share_the_reply_consumers_without_recreating_them(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    services: Services,
    tenants: TenantRepository,
    nats_url: str,
) -> None:
    first, second = services
    older = over_events(make_settings, nats_url, first)
    newer = over_events(make_settings, nats_url, first, second)
    assert older.task_queue == newer.task_queue
    gateway_older = WorkflowGateway(temporal_client, older)
    gateway_newer = WorkflowGateway(temporal_client, newer)
    # A reply of the second service already in the stream before any worker reads its replies.
    await second.publish_reply(
        {
            "type": "TenantMigrated",
            "commandId": "cmd-stale",
            "attempt": 1,
            "tenantId": "stale",
            "version": "x",
        }
    )
    logs = io.StringIO()
    with platform_logs_to(logs, older):
        async with running_worker(temporal_client, older):
            one = await provisioned(older, gateway_older, tenants)
            at_first = await reply_consumers(first.js, first.name, second.name)
        async with running_worker(temporal_client, newer):
            two = await provisioned(newer, gateway_newer, tenants)
            with_newer = await reply_consumers(first.js, first.name, second.name)
            # The older worker starts again while the newer one runs (a rolling deploy), on a
            # client of its own as a worker process would have.
            async with running_worker(await connect_client(older), older):
                with_both = await reply_consumers(first.js, first.name, second.name)
                three = await provisioned(newer, gateway_newer, tenants)
            settled = await eventually(
                lambda: reply_consumers(first.js, first.name, second.name), idle
            )

    assert at_first, "the older worker reads its service's replies through a consumer"
    for name, when in created(at_first).items():
        assert created(with_newer)[name] == when, f"{name} was re-created by the newer worker"
        assert created(with_both)[name] == when, f"{name} was re-created by the older worker"
    assert created(settled) == created(with_newer) == created(with_both)
    for name, info in at_first.items():
        first_seen, last_seen = info.delivered, settled[name].delivered
        assert first_seen is not None
        assert last_seen is not None
        assert last_seen.consumer_seq >= first_seen.consumer_seq, "its deliveries started over"
    for request in (one, two, three):
        assert len(first.of(request.id)) == 1
    assert len(second.of(two.id)) == 1, "the second service's reply was settled"
    # The third tenant's plan is that of whichever worker loaded it: with or without the second.
    assert len(second.of(three.id)) <= 1
    assert "cmd-stale" not in logs.getvalue(), "a new consumer replayed an old reply"


async def test_a_consumer_of_the_old_layout_hands_over_where_it_stopped(
    nats_url: str, services: Services
) -> None:
    """Upgrading from one consumer per task queue: the per-service consumer starts after the
    last reply the old one acknowledged (nothing lost, nothing replayed), and the old one is
    left alone."""
    service, _ = services
    queue = f"handover-{uuid.uuid4().hex[:8]}"
    legacy = consumer_name(queue)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for config in streams():
            await declare_stream(js, config)
        await js.add_consumer(
            REPLIES_STREAM,
            ConsumerConfig(
                durable_name=legacy,
                filter_subjects=[reply_subject(service.name)],
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        claims = {"type": "TenantTornDown", "attempt": 1, "tenantId": "t"}
        await service.publish_reply({**claims, "commandId": "cmd-acked"})
        old = await js.pull_subscribe_bind(durable=legacy, stream=REPLIES_STREAM)
        (message,) = await old.fetch(1, timeout=5)
        await message.ack_sync()
        await service.publish_reply({**claims, "commandId": "cmd-waiting"})

        seen: list[bytes] = []

        async def handle(delivery: ReplyDelivery) -> Handled:
            seen.append(delivery.data)
            return Handled.DONE

        bus = CommandBus(nats_url, consumer=legacy, services=[service.name])
        async with consuming_replies(bus, handle):
            await eventually(lambda: _seen(seen), lambda found: len(found) >= 1)
            await service.publish_reply({**claims, "commandId": "cmd-later"})
            await eventually(lambda: _seen(seen), lambda found: len(found) >= 2)
        assert [_command_of(data) for data in seen] == ["cmd-waiting", "cmd-later"]
        assert legacy in {info.name for info in await js.consumers_info(REPLIES_STREAM)}
    finally:
        await nc.close()


async def _seen(seen: list[bytes]) -> list[bytes]:
    return list(seen)


def _command_of(data: bytes) -> str:
    return str(jwt.decode(data, options={"verify_signature": False})["commandId"])
