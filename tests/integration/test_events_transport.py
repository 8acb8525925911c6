"""Event-driven migrations against a real NATS JetStream server, Temporal and PostgreSQL: a
service with transport events takes MigrateTenant/TeardownTenant commands from the bus and
answers with signed replies; the platform's activity attempts complete asynchronously."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import pytest_asyncio
from temporalio.client import Client

from api.auth import (
    DELETE_SCOPE,
    READ_SCOPE,
    ROLLOUTS_READ_SCOPE,
    ROLLOUTS_WRITE_SCOPE,
    WRITE_SCOPE,
)
from api.gateway import WorkflowGateway
from infra.db.repository import TenantRepository
from infra.events.commands import command_subject
from infra.security.keys import generate_private_key, load_public_key
from tenancy.models import StorageMode, TenantSpec
from tenancy.naming import provision_workflow_id
from tenancy.settings import DownstreamService, Settings
from tenancy.status import MigrationStatus, TenantStatus
from tests.conftest import running_worker, unique_id
from tests.integration.test_api import api_stack, body, token_for
from tests.integration.test_api import wait_status as api_wait_status
from tests.support.downstream_services import ReferenceConsumer
from tests.support.events_service import (
    OK,
    ScriptedEventsService,
    reply_consumers,
    scripted_events_service,
)
from tests.support.polling import eventually
from tests.support.storage import storage_exists
from workflows.provision.workflow import ProvisionTenantWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def spec(tenant_id: str | None = None) -> TenantSpec:
    return TenantSpec(
        id=tenant_id or unique_id("cmd"),
        name="Commands",
        storage_mode=StorageMode.SCHEMA,
        sla_tier="STANDARD",
    )


@pytest_asyncio.fixture(loop_scope="session")
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[ScriptedEventsService]:
    async with scripted_events_service(nats_url, f"ev-{uuid.uuid4().hex[:8]}", tmp_path) as svc:
        yield svc


@pytest.fixture
def events_settings(
    make_settings: Callable[..., Settings], service: ScriptedEventsService, nats_url: str
) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        return make_settings(
            downstream_services=(
                DownstreamService(
                    name=service.name, transport="events", reply_key_file=service.key_file
                ),
            ),
            events_url=nats_url,
            **overrides,
        )

    return build


async def provisioned(client: Client, settings: Settings, request: TenantSpec) -> TenantStatus:
    await WorkflowGateway(client, settings).provision(request)
    handle = client.get_workflow_handle_for(
        ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
    )
    return (await handle.result()).status


async def wait_status(tenants: TenantRepository, tenant_id: str, status: TenantStatus) -> None:
    await eventually(lambda: tenants.get(tenant_id), lambda t: t is not None and t.status is status)


async def test_a_tenant_is_migrated_by_command_and_signed_reply(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
    keys_dir: Path,
) -> None:
    settings = events_settings()
    request = spec()
    service.script(request.id, ("ok", "events_0007"))
    async with running_worker(temporal_client, settings):
        assert await provisioned(temporal_client, settings, request) is TenantStatus.ACTIVE

    (command,) = service.of(request.id)
    assert command["attempt"] == 1
    assert command["storageMode"] == "SCHEMA"
    assert command["jdbcUrl"].startswith("jdbc:postgresql://")
    assert command["schema"] == f"tenant_{request.id}"
    assert command["replyTo"] == f"platform.replies.{service.name}"
    assert command["idempotencyKey"].startswith(provision_workflow_id(request.id))
    # The token is the HTTP call's: signed by the platform, for this service and tenant.
    claims = jwt.decode(
        command["token"],
        load_public_key(keys_dir / "platform-signing.pem"),
        algorithms=["ES256", "RS256"],
        audience=service.name,
    )
    assert claims["tenantId"] == request.id
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert (record.service, record.status, record.version) == (
        service.name,
        MigrationStatus.SUCCEEDED,
        "events_0007",
    )
    assert command_subject(service.name) == f"platform.commands.{service.name}"


async def test_a_failure_is_retried_under_the_same_key_and_then_succeeds(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
) -> None:
    settings = events_settings()
    request = spec()
    service.script(request.id, ("fail", "HTTP 503: busy"), OK)
    async with running_worker(temporal_client, settings):
        assert await provisioned(temporal_client, settings, request) is TenantStatus.ACTIVE

    first, second = service.of(request.id)
    assert first["commandId"] == second["commandId"]
    assert first["idempotencyKey"] == second["idempotencyKey"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["token"] != second["token"], "each send carries a fresh single-use token"
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert record.status is MigrationStatus.SUCCEEDED
    assert record.attempts == 2


async def test_a_rejection_is_final_until_retried_after_the_fix(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
) -> None:
    settings = events_settings()
    request = spec()
    service.script(request.id, ("reject", "HTTP 422: unknown region"), OK)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        await wait_status(tenants, request.id, TenantStatus.MIGRATION_ERROR)
        tenant = await tenants.get(request.id)
        assert tenant is not None
        (record,) = tenant.migrations
        assert record.status is MigrationStatus.FAILED
        assert record.attempts == 1, "a rejection is not retried"
        assert record.last_error == "HTTP 422: unknown region"
        assert len(service.of(request.id)) == 1

        # The service is fixed (its script now answers OK); the operator retries.
        handle = temporal_client.get_workflow_handle_for(
            ProvisionTenantWorkflow.run, provision_workflow_id(request.id)
        )
        await handle.signal(ProvisionTenantWorkflow.retry_migration)
        assert (await handle.result()).status is TenantStatus.ACTIVE

    first, second = service.of(request.id)
    assert first["idempotencyKey"] != second["idempotencyKey"], "a retry is a new logical call"


async def test_no_reply_within_the_timeout_resends_under_the_same_key(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
) -> None:
    settings = events_settings(migration_timeout=timedelta(seconds=1))
    request = spec()
    service.script(request.id, ("silent", ""), OK)
    async with running_worker(temporal_client, settings):
        assert await provisioned(temporal_client, settings, request) is TenantStatus.ACTIVE

    first, second = service.of(request.id)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["idempotencyKey"] == second["idempotencyKey"]
    tenant = await tenants.get(request.id)
    assert tenant is not None
    (record,) = tenant.migrations
    assert record.status is MigrationStatus.SUCCEEDED


async def test_a_reply_that_comes_while_no_worker_runs_completes_the_waiting_attempt(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
) -> None:
    """The wait is durable: the attempt waits in Temporal and the reply in the stream, so a
    worker that comes back completes the attempt, and nothing is sent again."""
    settings = events_settings(migration_timeout=timedelta(seconds=30))
    request = spec()
    service.script(request.id, ("silent", ""))
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        (command,) = await eventually(
            lambda: _commands(service, request.id), lambda found: len(found) == 1
        )
    # No worker runs now; the service finishes and replies.
    await service.publish_reply(
        {
            "type": "TenantMigrated",
            "commandId": command["commandId"],
            "attempt": command["attempt"],
            "tenantId": request.id,
            "version": "events_0003",
        }
    )
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.MIGRATING
    async with running_worker(temporal_client, settings):
        await wait_status(tenants, request.id, TenantStatus.ACTIVE)

    assert len(service.of(request.id)) == 1, "the reply completed the first send's attempt"
    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.migrations[0].version == "events_0003"


async def test_unknown_finished_and_forged_replies_change_nothing(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    tenants: TenantRepository,
    platform_db_url: str,
    tmp_path: Path,
) -> None:
    settings = events_settings()
    request = spec()
    # The first command waits: nothing answers it until the test does.
    service.script(request.id, ("silent", ""))
    forger = tmp_path / "forger.pem"
    generate_private_key(forger)
    async with running_worker(temporal_client, settings):
        await WorkflowGateway(temporal_client, settings).provision(request)
        (command,) = await eventually(
            lambda: _commands(service, request.id), lambda found: len(found) == 1
        )
        claims = {
            "type": "TenantMigrated",
            "commandId": command["commandId"],
            "attempt": 1,
            "tenantId": request.id,
        }
        # A reply signed by another key that names the service's own (dead-lettered at once),
        # and one for a command that does not exist.
        await service.publish_reply(
            {**claims, "version": "forged"}, key_file=forger, headers={"kid": service.kid}
        )
        await service.publish_reply({**claims, "commandId": "cmd-unknown", "version": "x"})
        # Then the genuine reply: it is taken, and the forged one never was.
        await service.publish_reply({**claims, "version": "genuine_0001"})
        await wait_status(tenants, request.id, TenantStatus.ACTIVE)
        # A reply for the finished command: ignored, the record keeps its version.
        await service.publish_reply(
            {**claims, "type": "TenantMigrationFailed", "retryable": False, "reason": "late"}
        )
        await service.publish_reply({**claims, "version": "late_0002"})
        # Every reply was handed to the listener and acknowledged (or terminated) by it.
        await eventually(lambda: _unhandled_replies(service), lambda left: left == 0)

    tenant = await tenants.get(request.id)
    assert tenant is not None
    assert tenant.status is TenantStatus.ACTIVE
    (record,) = tenant.migrations
    assert (record.status, record.version, record.last_error) == (
        MigrationStatus.SUCCEEDED,
        "genuine_0001",
        None,
    )
    with psycopg.connect(platform_db_url) as conn:
        stored = conn.execute(
            "SELECT outcome, version, reason FROM downstream_commands WHERE command_id = %s",
            (command["commandId"],),
        ).fetchone()
    assert stored == ("succeeded", "genuine_0001", None), "only the genuine reply was taken"


async def _commands(service: ScriptedEventsService, tenant_id: str) -> list[dict[str, object]]:
    return service.of(tenant_id)


async def _unhandled_replies(service: ScriptedEventsService) -> int:
    infos = (await reply_consumers(service.js, service.name)).values()
    return sum(int(info.num_pending or 0) + int(info.num_ack_pending or 0) for info in infos)


ALL_SCOPES = (WRITE_SCOPE, READ_SCOPE, DELETE_SCOPE, ROLLOUTS_WRITE_SCOPE, ROLLOUTS_READ_SCOPE)


async def test_deletion_tears_down_by_command_and_retries_a_failure(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    keys_dir: Path,
) -> None:
    settings = events_settings()
    tenant_id = unique_id("cmd")
    service.script(tenant_id, OK, ("fail", "HTTP 503: busy"), OK)
    async with api_stack(temporal_client, settings, token_for(keys_dir, "tom", *ALL_SCOPES)) as api:
        created = await api.post("/api/tenants", json=body(tenant_id))
        assert created.status_code == 202, created.text
        await api_wait_status(api, tenant_id, "ACTIVE")
        answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
        assert answer.status_code == 202, answer.text
        await api_wait_status(api, tenant_id, "DELETED")

    first, second = service.of(tenant_id, "TeardownTenant")
    assert first["commandId"] == second["commandId"]
    assert first["idempotencyKey"] == second["idempotencyKey"]
    assert (first["attempt"], second["attempt"]) == (1, 2)


async def test_a_rollout_migrates_tenants_of_an_events_service(
    temporal_client: Client,
    events_settings: Callable[..., Settings],
    service: ScriptedEventsService,
    keys_dir: Path,
) -> None:
    settings = events_settings()
    ids = [unique_id("cmdr") for _ in range(4)]
    failing = ids[-1]
    async with api_stack(
        temporal_client, settings, token_for(keys_dir, "rita", *ALL_SCOPES)
    ) as api:
        for tenant_id in ids:
            assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
        for tenant_id in ids:
            await api_wait_status(api, tenant_id, "ACTIVE")
        service.version = "events_0002"
        # One tenant's call fails once (retried in the batch), then is rejected.
        service.script(failing, ("fail", "HTTP 503: busy"), ("reject", "HTTP 422: no"))
        answer = await api.post(
            "/api/rollouts",
            json={"selector": {"tenantIds": ids}, "concurrency": 2, "maxFailureRatio": 1},
        )
        assert answer.status_code == 202, answer.text
        rollout_id = answer.json()["id"]

        async def probe() -> dict[str, Any]:
            return (await api.get(f"/api/rollouts/{rollout_id}")).json()  # type: ignore[no-any-return]

        done = await eventually(probe, lambda r: r.get("status") in ("SUCCEEDED", "FAILED"))
        versions = (await api.get(f"/api/services/{service.name}/versions")).json()

    assert done["counts"]["succeeded"] == 3
    assert done["counts"]["failed"] == 1
    assert versions["versions"] == {"events_0002": 3, "events_0001": 1}
    rollout_commands = [
        c for c in service.of(failing) if c["idempotencyKey"].startswith(f"rollout-{rollout_id}")
    ]
    assert [c["attempt"] for c in rollout_commands] == [1, 2]


async def test_the_reference_service_migrates_and_tears_down_by_command(
    temporal_client: Client,
    make_settings: Callable[..., Settings],
    start_reference_consumer: Callable[..., AbstractContextManager[ReferenceConsumer]],
    reference_services: list[tuple[str, str]],
    nats_url: str,
    storage_db_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    """The real reference service in consumer mode beside the other one over HTTP: the same
    migrations land, and the purge tears its tables down, by command."""
    reply_key = tmp_path / "backend-reply.pem"
    generate_private_key(reply_key)
    tenant_id = unique_id("cmdref")
    with start_reference_consumer("backend-service", nats_url, reply_key) as backend:
        settings = make_settings(
            downstream_services=(
                DownstreamService(
                    name="backend-service",
                    transport="events",
                    reply_key_file=backend.reply_public_key_file,
                    db_role="backend_service",
                ),
                DownstreamService(
                    name="auth-service",
                    base_url=dict(reference_services)["auth-service"],
                    db_role="auth_service",
                ),
            ),
            events_url=nats_url,
        )
        token = token_for(keys_dir, "tom", *ALL_SCOPES)
        async with api_stack(temporal_client, settings, token) as api:
            assert (await api.post("/api/tenants", json=body(tenant_id))).status_code == 202
            active = await api_wait_status(api, tenant_id, "ACTIVE")
            tables = _tables(storage_db_url, f"tenant_{tenant_id}")
            answer = await api.delete(f"/api/tenants/{tenant_id}", params={"graceSeconds": 0})
            assert answer.status_code == 202, answer.text
            await api_wait_status(api, tenant_id, "DELETED")

    versions = {m["service"]: m["version"] for m in active["migrations"]}
    assert versions["backend-service"] == "backend_0002_project_archiving"
    assert versions["auth-service"].startswith("auth_")
    assert {"accounts", "projects"} <= tables, "backend-service's migrations ran by command"
    assert not storage_exists(storage_db_url, tenant_id, "SCHEMA")


def _tables(storage_db_url: str, schema: str) -> set[str]:
    with psycopg.connect(storage_db_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}
