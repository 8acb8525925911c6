"""Consumer mode against a real NATS server and the real PostgreSQL: commands in, signed
replies out, answered as the HTTP endpoints answer the same calls.

Each test runs a service of its own name (`backend-<hex>`, with backend-service's migrations),
so its durable consumer, command subject and reply subject are its alone. The test plays the
platform: it ensures the streams, publishes commands and reads replies back from the stream.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import nats
import nats.js.errors
import psycopg
import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from examples.downstream_service import consumer as consumer_module
from examples.downstream_service.app import create_app
from examples.downstream_service.consumer import (
    COMMANDS_STREAM,
    REPLIES_STREAM,
    CommandConsumer,
    ensure_streams,
)
from examples.downstream_service.settings import (
    MIGRATIONS_ROOT,
    ConsumerNotConfigured,
    DownstreamSettings,
)
from infra.security.keys import generate_private_key, load_private_key
from infra.security.signing import CallSigner
from tests.downstream.helpers import (
    Payload,
    Storage,
    app_client,
    history,
    migrate_path,
    owned_in,
    schema_payload,
    tables_in,
)
from tests.downstream.tokens import PlatformKey
from tests.support.downstream_services import ReferenceConsumer
from tests.support.polling import eventually

BACKEND_VERSIONS = ["backend_0001_accounts_projects", "backend_0002_project_archiving"]


@pytest.fixture(scope="module")
def reply_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's reply key (EC P-256, so ES256)."""
    path = tmp_path_factory.mktemp("reply-key") / "reply.pem"
    generate_private_key(path)
    return path


@pytest.fixture
def service() -> str:
    """A service name of this test alone: its own consumer and subjects on the shared server."""
    return f"backend-{secrets.token_hex(4)}"


@dataclass
class Platform:
    """The platform's side of the bus for one service."""

    js: JetStreamContext
    service: str
    key: PlatformKey | None = None

    def command(
        self,
        kind: str,
        payload: Payload,
        *,
        command_id: str | None = None,
        attempt: int = 1,
        idempotency_key: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """A command as the platform sends it, with a fresh token unless one is given."""
        return {
            "type": kind,
            "commandId": command_id or f"c-{secrets.token_hex(6)}",
            "attempt": attempt,
            "idempotencyKey": idempotency_key or secrets.token_hex(8),
            **payload,
            "token": token or self._token(payload["tenantId"]),
            "replyTo": f"platform.replies.{self.service}",
            "sentAt": "2026-11-30T18:00:00Z",
        }

    def _token(self, tenant_id: str) -> str:
        assert self.key is not None, "give a token or a platform key"
        return self.key.token(tenant_id, self.service)

    async def send(self, command: dict[str, Any] | bytes, msg_id: str | None = None) -> int:
        """Publish a command (or any bytes) on the service's subject; its stream sequence."""
        if isinstance(command, dict):
            data = json.dumps(command).encode()
            msg_id = msg_id or f"{command['commandId']}/{command['attempt']}"
        else:
            data = command
        ack = await self.js.publish(
            f"platform.commands.{self.service}",
            data,
            stream=COMMANDS_STREAM,
            headers={"Nats-Msg-Id": msg_id or secrets.token_hex(8)},
        )
        return ack.seq

    async def replies(self) -> list[tuple[str, bytes]]:
        """Every reply on the service's reply subject so far: (Nats-Msg-Id, body)."""
        subject = f"platform.replies.{self.service}"
        found: list[tuple[str, bytes]] = []
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(REPLIES_STREAM, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return found
            assert msg.seq is not None
            assert msg.data is not None
            found.append(((msg.headers or {}).get("Nats-Msg-Id", ""), msg.data))
            seq = msg.seq + 1

    async def reply_to(self, command: dict[str, Any]) -> bytes:
        """The reply to `command` (a compact JWS), once it is there."""
        wanted = f"{command['commandId']}/{command['attempt']}/reply"

        def mine(replies: list[tuple[str, bytes]]) -> bool:
            return any(msg_id == wanted for msg_id, _ in replies)

        replies = await eventually(self.replies, mine, timeout=15)
        (body,) = [body for msg_id, body in replies if msg_id == wanted]
        return body

    async def consumer(self) -> ConsumerInfo:
        """The state of the service's durable consumer."""
        info: ConsumerInfo = await self.js.consumer_info(COMMANDS_STREAM, self.service)
        return info

    async def settled(self, seq: int) -> ConsumerInfo:
        """The consumer's state once every command up to stream sequence `seq` is acked."""

        info: ConsumerInfo = await eventually(
            self.consumer,
            lambda info: (
                info.ack_floor is not None
                and (info.ack_floor.stream_seq or 0) >= seq
                and not info.num_ack_pending
            ),
            timeout=15,
        )
        return info


def verified(reply: bytes, reply_key: Path, service: str) -> dict[str, Any]:
    """The reply's claims, checked as the platform checks them."""
    claims: dict[str, Any] = jwt.decode(
        reply,
        load_private_key(reply_key).public_key(),
        algorithms=["ES256"],
        audience="platform-service",
        issuer=service,
        options={"require": ["iss", "aud", "iat", "exp", "jti"]},
    )
    return claims


@dataclass
class Running:
    """The service under test: its app (lifespan running) and an HTTP client to it."""

    app: FastAPI
    http: httpx.AsyncClient

    @property
    def consumer(self) -> CommandConsumer:
        consumer: CommandConsumer = self.app.state.consumer
        return consumer


@pytest.fixture
async def platform_bus(
    nats_url: str, service: str, platform: PlatformKey
) -> AsyncIterator[Platform]:
    """A connection to the bus as the platform has it, the streams ensured as it ensures them."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=5)
    await ensure_streams(js)
    try:
        yield Platform(js=js, service=service, key=platform)
    finally:
        await nc.close()


def consumer_settings(
    platform: PlatformKey, storage: Storage, service: str, nats_url: str, reply_key: Path
) -> DownstreamSettings:
    """Settings of a backend-service named `service`, in consumer mode."""
    return platform.settings(
        storage.service_url(),
        service_name=service,
        migrations_dir=MIGRATIONS_ROOT / "backend-service",
        events_url=nats_url,
        reply_key_file=reply_key,
    )


@pytest.fixture
async def running(
    platform: PlatformKey, storage: Storage, service: str, nats_url: str, reply_key: Path
) -> AsyncIterator[Running]:
    """The service in consumer mode beside HTTP, in this test's event loop."""
    app = create_app(consumer_settings(platform, storage, service, nats_url, reply_key))
    async with app_client(app) as client:
        yield Running(app, client)


async def test_migrate_command_is_answered_with_a_signed_reply_and_migrates(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    storage: Storage,
    reply_key: Path,
    service: str,
) -> None:
    command = platform_bus.command("MigrateTenant", schema_tenant)
    seq = await platform_bus.send(command)

    claims = verified(await platform_bus.reply_to(command), reply_key, service)

    assert claims["type"] == "TenantMigrated"
    assert claims["version"] == BACKEND_VERSIONS[-1]
    assert (claims["commandId"], claims["attempt"]) == (command["commandId"], 1)
    assert claims["tenantId"] == schema_tenant["tenantId"]
    assert claims["exp"] == claims["iat"] + 300
    assert "retryable" not in claims
    assert "reason" not in claims
    assert {"accounts", "projects"} <= tables_in(
        storage.superuser_url, storage.database, schema_tenant["schema"]
    )
    info = await platform_bus.settled(seq)
    assert info.num_redelivered == 0


async def test_a_resent_command_gets_the_same_answer_and_migrates_once(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    storage: Storage,
    reply_key: Path,
    service: str,
) -> None:
    first = platform_bus.command("MigrateTenant", schema_tenant)
    await platform_bus.send(first)
    first_claims = verified(await platform_bus.reply_to(first), reply_key, service)
    # The platform's re-send after its timeout: same call, fresh token, next attempt.
    again = platform_bus.command(
        "MigrateTenant",
        schema_tenant,
        command_id=first["commandId"],
        attempt=2,
        idempotency_key=first["idempotencyKey"],
    )
    await platform_bus.send(again)
    again_claims = verified(await platform_bus.reply_to(again), reply_key, service)

    assert again_claims["type"] == first_claims["type"] == "TenantMigrated"
    assert again_claims["version"] == first_claims["version"] == BACKEND_VERSIONS[-1]
    assert again_claims["attempt"] == 2
    assert again_claims["jti"] != first_claims["jti"]
    assert (
        history(storage.superuser_url, storage.database, schema_tenant["schema"], service)
        == BACKEND_VERSIONS
    )


async def test_a_bad_token_is_a_final_failure(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    stranger: PlatformKey,
    platform: PlatformKey,
    reply_key: Path,
    service: str,
    storage: Storage,
) -> None:
    forged = platform_bus.command(
        "MigrateTenant", schema_tenant, token=stranger.token(schema_tenant["tenantId"], service)
    )
    other_tenant = platform_bus.command(
        "MigrateTenant", schema_tenant, token=platform.token("ds_someone_else", service)
    )
    await platform_bus.send(forged)
    await platform_bus.send(other_tenant)

    for command, reason in [
        (forged, "HTTP 401: token signature does not verify with the platform key"),
        (other_tenant, "HTTP 401: token tenantId does not match the tenant in the path"),
    ]:
        claims = verified(await platform_bus.reply_to(command), reply_key, service)
        assert claims["type"] == "TenantMigrationFailed"
        assert claims["retryable"] is False
        assert claims["reason"] == reason
        assert "version" not in claims
    assert tables_in(storage.superuser_url, storage.database, schema_tenant["schema"]) == set()


@pytest.mark.parametrize(
    ("storage_case", "retryable"),
    [("schema never created", False), ("storage server down", True)],
)
async def test_storage_problems_are_classified_as_over_http(
    running: Running,
    platform_bus: Platform,
    storage: Storage,
    tenant_id: str,
    reply_key: Path,
    service: str,
    storage_case: str,
    retryable: bool,
    platform: PlatformKey,
    unused_tcp_port: int,
) -> None:
    payload = (
        schema_payload(tenant_id, storage)
        if storage_case == "schema never created"
        else schema_payload(tenant_id, storage, authority=f"127.0.0.1:{unused_tcp_port}")
    )
    over_http = await running.http.post(
        migrate_path(tenant_id), json=payload, headers=platform.headers(tenant_id, service)
    )
    command = platform_bus.command("MigrateTenant", payload)
    await platform_bus.send(command)

    claims = verified(await platform_bus.reply_to(command), reply_key, service)

    assert claims["type"] == "TenantMigrationFailed"
    assert claims["reason"] == f"HTTP {over_http.status_code}: {over_http.json()['detail']}"
    assert claims["retryable"] is retryable


async def test_a_bad_body_and_a_missing_key_are_rejections(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    reply_key: Path,
    service: str,
) -> None:
    bad_body = platform_bus.command("MigrateTenant", {**schema_tenant, "storageMode": "CLOUD"})
    no_key = platform_bus.command("MigrateTenant", schema_tenant)
    no_key["idempotencyKey"] = None
    await platform_bus.send(bad_body)
    await platform_bus.send(no_key)

    bad = verified(await platform_bus.reply_to(bad_body), reply_key, service)
    missing = verified(await platform_bus.reply_to(no_key), reply_key, service)

    assert (bad["retryable"], bad["reason"]) == (False, "HTTP 422: invalid field(s): storageMode")
    assert (missing["retryable"], missing["reason"]) == (
        False,
        "HTTP 400: the Idempotency-Key header is required",
    )


async def test_teardown_command_drops_the_service_tables(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    storage: Storage,
    reply_key: Path,
    service: str,
) -> None:
    migrate = platform_bus.command("MigrateTenant", schema_tenant)
    await platform_bus.send(migrate)
    await platform_bus.reply_to(migrate)
    schema, role = schema_tenant["schema"], storage.role()
    assert owned_in(storage.superuser_url, storage.database, schema, role)

    teardown = platform_bus.command("TeardownTenant", schema_tenant)
    await platform_bus.send(teardown)
    claims = verified(await platform_bus.reply_to(teardown), reply_key, service)

    assert claims["type"] == "TenantTornDown"
    assert "version" not in claims
    assert "retryable" not in claims
    assert owned_in(storage.superuser_url, storage.database, schema, role) == set()
    # Again: HTTP answers 404 (nothing to tear down), which the platform counts as done.
    again = platform_bus.command(
        "TeardownTenant", schema_tenant, idempotency_key=teardown["idempotencyKey"]
    )
    await platform_bus.send(again)
    assert verified(await platform_bus.reply_to(again), reply_key, service)["type"] == (
        "TenantTornDown"
    )


async def test_garbage_is_acked_without_a_reply_and_the_consumer_keeps_working(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    reply_key: Path,
    service: str,
) -> None:
    good = platform_bus.command("MigrateTenant", schema_tenant)
    elsewhere = {**good, "commandId": "c-elsewhere", "replyTo": "platform.replies.billing"}
    garbage: list[dict[str, Any] | bytes] = [
        b"not json",
        b"[1, 2]",
        {**good, "commandId": "c-unknown", "type": "DropEverything"},
        {**good, "commandId": "c-no-attempt", "attempt": "1"},
        elsewhere,
    ]
    last = 0
    for message in garbage:
        last = await platform_bus.send(message, msg_id=secrets.token_hex(8))

    info = await platform_bus.settled(last)
    assert await platform_bus.replies() == []
    assert info.num_redelivered == 0

    await platform_bus.send(good)
    claims = verified(await platform_bus.reply_to(good), reply_key, service)
    assert claims["type"] == "TenantMigrated"
    assert len(await platform_bus.replies()) == 1


async def test_a_redelivered_command_is_answered_from_the_idempotency_record(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    storage: Storage,
    reply_key: Path,
    service: str,
) -> None:
    # The replies stream is gone when the first answer is ready, so its reply fails, the
    # command is not acked and comes again, carrying a token whose jti is now used.
    await eventually(_ready(running), bool, timeout=15)
    await platform_bus.js.delete_stream(REPLIES_STREAM)
    command = platform_bus.command("MigrateTenant", schema_tenant)
    seq = await platform_bus.send(command)

    claims = verified(await platform_bus.reply_to(command), reply_key, service)

    assert claims["type"] == "TenantMigrated"
    assert claims["version"] == BACKEND_VERSIONS[-1]
    info = await platform_bus.settled(seq)
    # Delivered more than once: the answer came from the redelivery.
    assert info.delivered is not None
    assert (info.delivered.consumer_seq or 0) >= 2
    assert (
        history(storage.superuser_url, storage.database, schema_tenant["schema"], service)
        == BACKEND_VERSIONS
    )


async def test_a_used_token_without_a_recorded_answer_is_dropped_not_rejected(
    running: Running,
    platform_bus: Platform,
    schema_tenant: Payload,
    service: str,
) -> None:
    # The token's jti is spent by an HTTP call: the bus has no answer of it to send again.
    command = platform_bus.command("MigrateTenant", schema_tenant)
    spent = await running.http.post(
        migrate_path(schema_tenant["tenantId"]),
        json=schema_tenant,
        headers={
            "Idempotency-Key": command["idempotencyKey"],
            "Authorization": f"Bearer {command['token']}",
        },
    )
    assert spent.status_code == 200
    seq = await platform_bus.send(command)

    await platform_bus.settled(seq)

    assert await platform_bus.replies() == []


def _ready(running: Running) -> Any:
    async def probe() -> bool:
        return running.consumer.ready.is_set()

    return probe


async def test_consumer_mode_needs_a_reply_key(
    platform: PlatformKey, storage: Storage, nats_url: str
) -> None:
    app = create_app(platform.settings(storage.service_url(), events_url=nats_url))
    with pytest.raises(ConsumerNotConfigured, match="DOWNSTREAM_REPLY_KEY_FILE"):
        async with app.router.lifespan_context(app):
            pass


def slow_migration(folder: Path, seconds: float = 2.5) -> Path:
    """A migration set of one migration that takes `seconds`."""
    slow = folder / "slow"
    slow.mkdir()
    (slow / "slow_0001_wait.sql").write_text(
        "CREATE TABLE slow_wait (id INT PRIMARY KEY);\n"
        f"DO $$ BEGIN PERFORM pg_sleep({seconds}); END $$;\n"
    )
    return slow


async def test_a_long_migration_is_kept_in_progress_not_redelivered(
    platform: PlatformKey,
    storage: Storage,
    service: str,
    nats_url: str,
    reply_key: Path,
    platform_bus: Platform,
    schema_tenant: Payload,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The protocol's ack_wait is 60 s; a consumer of 1 s shows the same in a test's time.
    monkeypatch.setattr(consumer_module, "ACK_WAIT", timedelta(seconds=1))
    monkeypatch.setattr(consumer_module, "PROGRESS_INTERVAL", timedelta(seconds=0.25))
    settings = consumer_settings(platform, storage, service, nats_url, reply_key)
    app = create_app(settings.model_copy(update={"migrations_dir": slow_migration(tmp_path)}))
    async with app_client(app):
        command = platform_bus.command("MigrateTenant", schema_tenant)
        seq = await platform_bus.send(command)
        claims = verified(await platform_bus.reply_to(command), reply_key, service)
        info = await platform_bus.settled(seq)

    assert claims["type"] == "TenantMigrated"
    assert claims["version"] == "slow_0001_wait"
    assert info.config.ack_wait == 1
    assert info.delivered is not None
    assert info.delivered.consumer_seq == 1


async def test_the_support_helper_runs_a_reference_consumer_for_platform_tests(
    start_reference_consumer: Callable[..., AbstractContextManager[ReferenceConsumer]],
    nats_url: str,
    keys_dir: Path,
    storage_db_url: str,
    tmp_path: Path,
) -> None:
    # As a platform test uses it: the session's service role and platform key, a reply key of
    # its own; the platform verifies with the public half the helper writes.
    reply_key = tmp_path / "backend-reply.pem"
    generate_private_key(reply_key)
    tenant_id = f"ds_{secrets.token_hex(6)}"
    server = urlsplit(storage_db_url)
    database = server.path.lstrip("/")
    signer = CallSigner(keys_dir / "platform-signing.pem", timedelta(minutes=5))
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(timeout=5)
        await ensure_streams(js)
        with start_reference_consumer("backend-service", nats_url, reply_key) as service:
            bus = Platform(js=js, service="backend-service")
            command = bus.command(
                "TeardownTenant",
                {
                    "tenantId": tenant_id,
                    "storageMode": "SCHEMA",
                    "jdbcUrl": f"jdbc:postgresql://{server.hostname}:{server.port}/{database}",
                    "schema": f"tenant_{tenant_id}",
                    "database": database,
                },
                token=signer.token(audience="backend-service", tenant_id=tenant_id),
            )
            await bus.send(command)
            reply = await bus.reply_to(command)
            healthy = httpx.get(f"{service.url}/healthz").status_code
    finally:
        await nc.close()

    claims = jwt.decode(
        reply,
        service.reply_public_key_file.read_bytes(),
        algorithms=["ES256"],
        audience="platform-service",
        issuer="backend-service",
    )
    # Its schema never existed: HTTP's 404, which counts as torn down.
    assert (claims["type"], claims["tenantId"], claims.get("reason")) == (
        "TenantTornDown",
        tenant_id,
        None,
    )
    assert healthy == 200


async def test_with_nats_away_http_serves_and_the_service_stops_promptly(
    platform: PlatformKey,
    storage: Storage,
    service: str,
    reply_key: Path,
    unused_tcp_port: int,
) -> None:
    nowhere = f"nats://127.0.0.1:{unused_tcp_port}"
    app = create_app(consumer_settings(platform, storage, service, nowhere, reply_key))
    async with app_client(app) as client:
        health = await client.get("/healthz")
        consumer: CommandConsumer = app.state.consumer
        stopping = time.monotonic()
    stopped_in = time.monotonic() - stopping

    assert health.status_code == 200
    assert not consumer.ready.is_set()
    assert stopped_in < 2


async def test_commands_run_at_once_up_to_the_concurrency(
    platform: PlatformKey,
    storage: Storage,
    service: str,
    nats_url: str,
    reply_key: Path,
    platform_bus: Platform,
    schema_tenant: Payload,
    neighbour_tenant: Payload,
    admin: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    settings = consumer_settings(platform, storage, service, nats_url, reply_key)
    app = create_app(
        settings.model_copy(
            update={"migrations_dir": slow_migration(tmp_path), "consumer_concurrency": 2}
        )
    )

    async def sleeping() -> int:
        # The service's sessions inside the slow migration right now.
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND query LIKE %s",
            (storage.role(), "%pg_sleep%"),
        ).fetchone()
        return int(row[0]) if row else 0

    async with app_client(app):
        commands = [
            platform_bus.command("MigrateTenant", payload)
            for payload in (schema_tenant, neighbour_tenant)
        ]
        for command in commands:
            await platform_bus.send(command)
        await eventually(sleeping, lambda count: count == 2, timeout=10)
        replies = [
            verified(await platform_bus.reply_to(command), reply_key, service)
            for command in commands
        ]

    assert [claims["type"] for claims in replies] == ["TenantMigrated", "TenantMigrated"]
