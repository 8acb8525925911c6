"""Reply keys rotate (issue 19, point 8), against real NATS JetStream, Temporal and PostgreSQL:
a service's replies verify against every key the platform holds for it, chosen by the JWS
`kid`; a reply that no key of a worker verifies is handed back for another worker, and
dead-lettered (terminated, counted, logged) once it has gone round often enough."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from nats.js.api import ConsumerInfo
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from activities.deletion import TeardownLedger
from activities.migrations import MigrationLedger
from activities.replies import ReplyListener, consuming_replies
from api.gateway import WorkflowGateway
from infra.db.commands import CommandRepository
from infra.db.deletions import DeletionRepository
from infra.db.repository import TenantRepository
from infra.events.command_bus import CommandBus, consumer_name
from infra.events.commands import load_reply_keys
from infra.security.keys import generate_private_key, load_private_key, public_jwk
from infra.temporal import worker_runtime
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
from tests.support.metrics import Samples, scrape, value
from tests.support.polling import eventually
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec() -> TenantSpec:
    return TenantSpec(
        id=unique_id("rkey"), name="Keys", storage_mode=StorageMode.SCHEMA, sla_tier="STANDARD"
    )


@pytest_asyncio.fixture(loop_scope="session")
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[ScriptedEventsService]:
    async with scripted_events_service(nats_url, f"rk-{uuid.uuid4().hex[:8]}", tmp_path) as svc:
        yield svc


def new_key(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.pem"
    generate_private_key(path)
    return path


def holding(
    make_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    nats_url: str,
    *key_files: Path,
    **overrides: object,
) -> Settings:
    """Settings whose one events service is `service`, verified with `key_files`, written as
    an operator writes PLATFORM_DOWNSTREAM_SERVICES."""
    first, *more = key_files
    entry = DownstreamService.model_validate(
        {
            "name": service.name,
            "transport": "events",
            "replyKeyFile": str(first),
            "replyKeyFiles": [str(path) for path in more],
        }
    )
    return make_settings(downstream_services=(entry,), events_url=nats_url, **overrides)


async def wait_status(tenants: TenantRepository, tenant_id: str, status: TenantStatus) -> None:
    await eventually(lambda: tenants.get(tenant_id), lambda t: t is not None and t.status is status)


async def test_replies_signed_with_the_old_and_the_new_key_are_both_taken(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
    nats_url: str,
    tmp_path: Path,
) -> None:
    old, new = service.key_file, new_key(tmp_path, "new")
    settings = holding(make_settings, service, nats_url, old, new)
    gateway = WorkflowGateway(temporal_client, settings)
    before, after, without_kid = spec(), spec(), spec()
    async with running_worker(temporal_client, settings):
        await gateway.provision(before)
        await wait_status(tenants, before.id, TenantStatus.ACTIVE)
        service.key_file = new  # the service rolls its key
        await gateway.provision(after)
        await wait_status(tenants, after.id, TenantStatus.ACTIVE)
        service.send_kid = False  # a reply without kid is tried against every key
        await gateway.provision(without_kid)
        await wait_status(tenants, without_kid.id, TenantStatus.ACTIVE)
    for request in (before, after, without_kid):
        assert len(service.of(request.id)) == 1, "each reply was taken on its first send"


async def test_a_reply_a_worker_cannot_verify_is_left_for_a_worker_holding_its_key(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
    nats_url: str,
    tmp_path: Path,
) -> None:
    old, new = service.key_file, new_key(tmp_path, "new")
    # Long enough that nothing is re-sent: the first send's reply must complete the attempt.
    timeout = timedelta(seconds=90)
    lagging = holding(make_settings, service, nats_url, old, migration_timeout=timeout)
    current = holding(make_settings, service, nats_url, old, new, migration_timeout=timeout)
    assert lagging.task_queue == current.task_queue
    request = spec()
    service.script(request.id, ("silent", ""))
    async with running_worker(temporal_client, lagging):
        await WorkflowGateway(temporal_client, lagging).provision(request)
        (command,) = await eventually(
            lambda: _commands(service, request.id), lambda found: len(found) == 1
        )
        service.key_file = new
        await service.publish_reply(
            {
                "type": "TenantMigrated",
                "commandId": command["commandId"],
                "attempt": command["attempt"],
                "tenantId": request.id,
                "version": "events_0009",
            }
        )
        # The worker without the new key hands it back, and it comes round again.
        await eventually(
            lambda: reply_consumers(service.js, service.name),
            lambda infos: any((info.num_redelivered or 0) >= 1 for info in infos.values()),
        )
        tenant = await tenants.get(request.id)
        assert tenant is not None
        assert tenant.status is TenantStatus.MIGRATING
    async with running_worker(temporal_client, current):
        await wait_status(tenants, request.id, TenantStatus.ACTIVE)
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.migrations[0].version == "events_0009"
    assert len(service.of(request.id)) == 1, "the reply settled the first send"


async def test_a_reply_no_key_verifies_is_dead_lettered_after_a_bound(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
    platform_db_url: str,
    nats_url: str,
    tmp_path: Path,
) -> None:
    """The bound, the metric and the log line, on a listener built with a small bound: a
    reply signed by a key nobody holds goes round that many times, then is terminated; one
    that names a key the worker holds and fails it is forged and terminated at once."""
    stranger = new_key(tmp_path, "stranger")
    address = f"127.0.0.1:{free_port()}"
    settings = holding(
        make_settings, service, nats_url, service.key_file, worker_metrics_address=address
    )
    runtime = worker_runtime(settings)
    claims = {
        "type": "TenantMigrated",
        "commandId": "cmd-nobody",
        "attempt": 1,
        "tenantId": "nobody",
        "version": "x",
    }
    logs = io.StringIO()
    bus = CommandBus(
        nats_url,
        consumer=consumer_name(settings.task_queue),
        services=[service.name],
        unverified_delay=timedelta(milliseconds=100),
    )
    pool: AsyncConnectionPool = AsyncConnectionPool(platform_db_url, min_size=1, max_size=2)
    async with pool:
        listener = ReplyListener(
            temporal_client,
            CommandRepository(pool),
            {service.name: load_reply_keys([service.key_file])},
            MigrationLedger(tenants),
            TeardownLedger(DeletionRepository(pool)),
            runtime.metric_meter,
            unverified_deliveries=3,
        )
        with platform_logs_to(logs, settings):
            async with consuming_replies(bus, listener.handle):
                unknown = service.reply_token(claims, key_file=stranger)
                await service.publish_reply(claims, key_file=stranger)
                (info,) = (
                    await eventually(
                        lambda: reply_consumers(service.js, service.name),
                        lambda infos: _settled(infos, delivered=3),
                    )
                ).values()
                samples = await eventually(lambda: scrape(address), lambda s: dead(s) == 1)
                assert value(samples, REPLIES, result="unverified") == 2
                # Forged: it names the service's own key, which no worker could verify it with.
                await service.publish_reply(claims, key_file=stranger, headers={"kid": service.kid})
                await eventually(
                    lambda: reply_consumers(service.js, service.name),
                    lambda infos: _settled(infos, delivered=4),
                )
                await eventually(lambda: scrape(address), lambda s: dead(s) == 2)
    lines = [line for line in logs.getvalue().splitlines() if "dead-lettered" in line]
    assert len(lines) == 2, logs.getvalue()
    assert all(service.name in line for line in lines)
    assert any(new_kid(stranger) in line for line in lines)
    assert any(service.kid in line for line in lines)
    assert not any(unknown.decode() in line for line in logs.getvalue().splitlines())
    assert info.name.startswith(consumer_name(settings.task_queue))


REPLIES = "platform_command_replies_total"


def dead(samples: Samples) -> float | None:
    return value(samples, REPLIES, result="dead_lettered")


def new_kid(key_file: Path) -> str:
    return str(public_jwk(load_private_key(key_file))["kid"])


def _settled(infos: dict[str, ConsumerInfo], *, delivered: int) -> bool:
    """The one consumer has handed out `delivered` messages and holds none back."""
    (info,) = infos.values()
    return (
        info.delivered is not None
        and info.delivered.consumer_seq == delivered
        and not info.num_ack_pending
        and not info.num_pending
    )


async def _commands(service: ScriptedEventsService, tenant_id: str) -> list[dict[str, object]]:
    return service.of(tenant_id)
