"""The wire protocol of event-driven migrations: commands as JSON, replies as signed JWS, and
what the settings demand of a service with transport events."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from infra.db.commands import CommandRow
from infra.events.commands import (
    REPLY_AUDIENCE,
    Command,
    CommandType,
    ReplyOutcome,
    ReplyRefused,
    ReplyType,
    ReplyUnverified,
    command_id,
    load_reply_keys,
    verify_reply,
)
from infra.security.keys import generate_private_key, load_private_key, public_jwk
from tenancy.models import StorageLocation, StorageMode
from tenancy.settings import DownstreamService, Settings

SERVICE = "ledger-service"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "service.pem"
    generate_private_key(path)
    return path


def signed(key_file: Path, headers: dict[str, Any] | None = None, **claims: Any) -> bytes:
    now = int(time.time())
    body = {
        "iss": SERVICE,
        "aud": REPLY_AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "type": "TenantMigrated",
        "commandId": "cmd-1",
        "attempt": 1,
        "tenantId": "acme",
        "version": "ledger_0003",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, load_private_key(key_file), algorithm="ES256", headers=headers).encode()


def test_a_command_carries_the_http_call_s_content(tmp_path: Path) -> None:
    location = StorageLocation(
        mode=StorageMode.SCHEMA,
        database="tenants",
        schema_name="tenant_acme",
        jdbc_url="jdbc:postgresql://db:5432/tenants?currentSchema=tenant_acme",
    )
    identifier = command_id(CommandType.MIGRATE, "wf/run/ledger-service/0")
    command = Command(
        type=CommandType.MIGRATE,
        command_id=identifier,
        attempt=2,
        service=SERVICE,
        tenant_id="acme",
        location=location,
        idempotency_key="wf/run/ledger-service/0",
        token="header.claims.signature",
    )
    body = json.loads(command.body(datetime(2026, 11, 30, 18, 0, tzinfo=UTC)))
    assert body == {
        "type": "MigrateTenant",
        "commandId": identifier,
        "attempt": 2,
        "idempotencyKey": "wf/run/ledger-service/0",
        "tenantId": "acme",
        "storageMode": "SCHEMA",
        "jdbcUrl": "jdbc:postgresql://db:5432/tenants?currentSchema=tenant_acme",
        "schema": "tenant_acme",
        "database": "tenants",
        "token": "header.claims.signature",
        "replyTo": "platform.replies.ledger-service",
        "sentAt": "2026-11-30T18:00:00.000000Z",
    }
    assert command.message_id == f"{identifier}/2"


def test_command_ids_are_stable_per_key_and_kind() -> None:
    key = "wf/run/svc/0"
    assert command_id(CommandType.MIGRATE, key) == command_id(CommandType.MIGRATE, key)
    assert command_id(CommandType.MIGRATE, key) != command_id(CommandType.MIGRATE, key + "1")
    assert command_id(CommandType.MIGRATE, key) != command_id(CommandType.TEARDOWN, key)


def test_a_signed_reply_is_read(key_file: Path) -> None:
    reply = verify_reply(signed(key_file), SERVICE, load_reply_keys([key_file]))
    assert (reply.type, reply.outcome, reply.version, reply.reason) == (
        ReplyType.MIGRATED,
        ReplyOutcome.SUCCEEDED,
        "ledger_0003",
        None,
    )
    assert (reply.command_id, reply.attempt, reply.tenant_id) == ("cmd-1", 1, "acme")
    assert reply.kind is CommandType.MIGRATE


@pytest.mark.parametrize(
    ("claims", "outcome"),
    [
        ({"retryable": True}, ReplyOutcome.FAILED),
        ({}, ReplyOutcome.FAILED),
        ({"retryable": False}, ReplyOutcome.REJECTED),
    ],
)
def test_a_failure_is_retryable_unless_the_service_says_not(
    key_file: Path, claims: dict[str, Any], outcome: ReplyOutcome
) -> None:
    data = signed(
        key_file,
        type="TenantMigrationFailed",
        version=None,
        reason="HTTP 503:\n database\x00 away",
        **claims,
    )
    reply = verify_reply(data, SERVICE, load_reply_keys([key_file]))
    assert reply.outcome is outcome
    assert reply.reason == "HTTP 503: database away"


def test_a_teardown_reply_answers_teardowns_only(key_file: Path) -> None:
    reply = verify_reply(
        signed(key_file, type="TenantTornDown", version=None), SERVICE, load_reply_keys([key_file])
    )
    assert (reply.kind, reply.outcome) == (CommandType.TEARDOWN, ReplyOutcome.SUCCEEDED)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iss": "other-service"}, "Issuer"),
        ({"aud": "someone-else"}, "Audience"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "Expired"),
        ({"type": "TenantExploded"}, "not a reply"),
        ({"commandId": None}, "not a reply"),
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"version": None}, "without a version"),
    ],
)
def test_replies_that_cannot_be_trusted_are_refused(
    key_file: Path, claims: dict[str, Any], why: str
) -> None:
    with pytest.raises(ReplyRefused, match=why):
        verify_reply(signed(key_file, **claims), SERVICE, load_reply_keys([key_file]))


def test_a_reply_signed_with_another_key_is_refused(key_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    generate_private_key(other)
    with pytest.raises(ReplyUnverified, match="Signature") as unverified:
        verify_reply(signed(other), SERVICE, load_reply_keys([key_file]))
    assert (unverified.value.kid, unverified.value.elsewhere) == (None, True)
    with pytest.raises(ReplyRefused):
        verify_reply(b"\xff not a token", SERVICE, load_reply_keys([key_file]))


def kid_of(key_file: Path) -> str:
    return str(public_jwk(load_private_key(key_file))["kid"])


def test_a_reply_is_verified_with_the_key_its_kid_names_or_with_each_key(
    key_file: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.pem"
    generate_private_key(new)
    keys = load_reply_keys([key_file, new])
    assert set(keys) == {kid_of(key_file), kid_of(new)}
    for signer in (key_file, new):
        for headers in ({"kid": kid_of(signer)}, {}, {"kid": "the-service-s-own-name"}):
            assert verify_reply(signed(signer, headers), SERVICE, keys).version == "ledger_0003"


def test_a_reply_no_held_key_verifies_says_whether_another_worker_may(
    key_file: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.pem"
    generate_private_key(new)
    old_only = load_reply_keys([key_file])
    # Signed with a key this worker does not hold yet: another worker may hold it.
    with pytest.raises(ReplyUnverified) as lacking:
        verify_reply(signed(new, {"kid": kid_of(new)}), SERVICE, old_only)
    assert (lacking.value.kid, lacking.value.elsewhere) == (kid_of(new), True)
    # Naming the held key and signed with another: forged, whoever holds that key.
    with pytest.raises(ReplyUnverified) as forged:
        verify_reply(signed(new, {"kid": kid_of(key_file)}), SERVICE, old_only)
    assert (forged.value.kid, forged.value.elsewhere) == (kid_of(key_file), False)
    # A signature that verifies but claims that do not hold are refused, not handed back.
    with pytest.raises(ReplyRefused) as refused:
        verify_reply(
            signed(new, {"kid": kid_of(new)}, iss="other"), SERVICE, load_reply_keys([new])
        )
    assert not isinstance(refused.value, ReplyUnverified)


def row(**fields: Any) -> CommandRow:
    values: dict[str, Any] = {
        "command_id": "cmd-1",
        "kind": "MigrateTenant",
        "tenant_id": "acme",
        "service": SERVICE,
        "idempotency_key": "k",
        "max_attempts": 3,
        "attempt": 2,
        "task_token": b"t",
        "sent_at": datetime.now(UTC),
        "outcome": None,
        "outcome_attempt": None,
        "version": None,
        "reason": None,
        "replied_at": None,
        "created_at": datetime.now(UTC),
    }
    values.update(fields)
    return CommandRow(**values)


def test_a_send_without_its_reply_is_unanswered() -> None:
    assert row().unanswered_send
    assert not row(sent_at=None).unanswered_send, "never taken by the bus: not a timeout"
    assert not row(outcome="failed", outcome_attempt=2).unanswered_send
    assert row(outcome="failed", outcome_attempt=1).unanswered_send
    assert not row(outcome="succeeded", outcome_attempt=1).unanswered_send
    assert row(outcome="rejected").answered(5)
    assert row(outcome="failed", outcome_attempt=2).answered(2)
    assert not row(outcome="failed", outcome_attempt=1).answered(2)


def test_an_events_service_needs_a_reply_key_and_an_http_one_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="replyKeyFile"):
        DownstreamService(name="ledger-service", transport="events")
    with pytest.raises(ValidationError, match="baseUrl"):
        DownstreamService(name="ledger-service")
    service = DownstreamService.model_validate(
        {"name": "ledger-service", "transport": "events", "replyKeyFile": str(tmp_path / "k")}
    )
    assert service.over_events
    assert service.describe() == "events: platform.commands.ledger-service"
    assert service.reply_key_paths == (tmp_path / "k",)
    rolling = DownstreamService.model_validate(
        {
            "name": "ledger-service",
            "transport": "events",
            "replyKeyFile": str(tmp_path / "old"),
            "replyKeyFiles": [str(tmp_path / "new")],
        }
    )
    assert rolling.reply_key_paths == (tmp_path / "old", tmp_path / "new")
    listed = DownstreamService.model_validate(
        {"name": "ledger-service", "transport": "events", "replyKeyFiles": [str(tmp_path / "a")]}
    )
    assert listed.reply_key_paths == (tmp_path / "a",)


def test_commands_need_a_nats_bus(tmp_path: Path) -> None:
    events = DownstreamService(
        name="ledger-service", transport="events", reply_key_file=tmp_path / "k"
    )
    with pytest.raises(ValidationError, match="nats://"):
        Settings(
            downstream_services=(events,),
            events_backend="kafka",
            events_url="kafka://broker:9092",
        )
    settings = Settings(downstream_services=(events,), events_url="nats://bus:4222")
    assert settings.events_services() == (events,)
