"""Consumer mode's pure parts: reply signing, the HTTP answer -> reply mapping, command
envelopes, and its settings (no server needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from examples.downstream_service.__main__ import main
from examples.downstream_service.calls import Answer, Operation
from examples.downstream_service.commands import NotACommand, parse_command, reply_for
from examples.downstream_service.replies import ReplyKeyInvalid, ReplySigner, ReplyType, key_id
from examples.downstream_service.settings import ConsumerNotConfigured, DownstreamSettings
from infra.security.keys import public_jwk
from tests.downstream.tokens import PlatformKey

SERVICE = "backend-service"


def _write(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize(
    ("make_key", "algorithm"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_replies_are_jws_signed_with_the_reply_key(
    tmp_path: Path, make_key: Any, algorithm: str
) -> None:
    key = make_key()
    signer = ReplySigner(_write(tmp_path / "reply.pem", key), service_name=SERVICE)

    token = signer.sign(
        ReplyType.MIGRATION_FAILED,
        command_id="c-1",
        attempt=3,
        tenant_id="acme",
        retryable=True,
        reason="HTTP 503: database\nunavailable",
    )

    assert jwt.get_unverified_header(token.decode())["alg"] == algorithm
    claims = jwt.decode(
        token, key.public_key(), algorithms=[algorithm], audience="platform-service", issuer=SERVICE
    )
    assert claims["exp"] == claims["iat"] + 300
    assert len(claims["jti"]) == 32
    assert {name: claims[name] for name in ("type", "commandId", "attempt", "tenantId")} == {
        "type": "TenantMigrationFailed",
        "commandId": "c-1",
        "attempt": 3,
        "tenantId": "acme",
    }
    assert claims["retryable"] is True
    assert claims["reason"] == "HTTP 503: database unavailable"  # one line
    assert "version" not in claims


# RFC 7638, section 3.1: an RSA key and its JWK thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_key_id_is_the_rfc_7638_thumbprint_the_platform_computes_too(tmp_path: Path) -> None:
    modulus = int.from_bytes(base64.urlsafe_b64decode(RFC7638_N + "=" * (-len(RFC7638_N) % 4)))
    rfc_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    assert key_id(rfc_key) == RFC7638_THUMBPRINT
    assert public_jwk(rfc_key)["kid"] == RFC7638_THUMBPRINT, "the platform agrees"
    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ):
        signer = ReplySigner(_write(tmp_path / "reply.pem", key), service_name=SERVICE)
        token = signer.sign(ReplyType.TORN_DOWN, command_id="c-1", attempt=1, tenant_id="acme")
        assert jwt.get_unverified_header(token.decode())["kid"] == public_jwk(key)["kid"]
        assert signer.kid == public_jwk(key)["kid"]


def test_a_reply_key_it_cannot_use_is_refused(tmp_path: Path) -> None:
    p384 = _write(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    public_only = tmp_path / "public.pem"
    public_only.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for path, reason in [
        (tmp_path / "missing.pem", "not a readable unencrypted PEM private key"),
        (public_only, "not a readable unencrypted PEM private key"),
        (p384, "RSA or EC P-256"),
    ]:
        with pytest.raises(ReplyKeyInvalid, match=reason):
            ReplySigner(path, service_name=SERVICE)


def _problem(status: int, detail: str = "why") -> Answer:
    return Answer(status, {"status": status, "detail": detail})


@pytest.mark.parametrize(
    ("operation", "answer", "expected"),
    [
        (
            Operation.MIGRATE,
            Answer(200, {"version": "v2", "applied": []}),
            (ReplyType.MIGRATED, "v2", None, None),
        ),
        (Operation.TEARDOWN, Answer(200, {"tenantId": "acme", "dropped": []}), None),
        (Operation.TEARDOWN, _problem(404), None),
        (Operation.MIGRATE, _problem(404), (ReplyType.MIGRATION_FAILED, None, False, "404")),
        (Operation.MIGRATE, _problem(408), (ReplyType.MIGRATION_FAILED, None, True, "408")),
        (Operation.MIGRATE, _problem(429), (ReplyType.MIGRATION_FAILED, None, True, "429")),
        (Operation.MIGRATE, _problem(500), (ReplyType.MIGRATION_FAILED, None, True, "500")),
        (Operation.MIGRATE, _problem(503), (ReplyType.MIGRATION_FAILED, None, True, "503")),
        (Operation.MIGRATE, _problem(401), (ReplyType.MIGRATION_FAILED, None, False, "401")),
        (Operation.MIGRATE, _problem(409), (ReplyType.MIGRATION_FAILED, None, False, "409")),
        (Operation.MIGRATE, _problem(422), (ReplyType.MIGRATION_FAILED, None, False, "422")),
        (Operation.TEARDOWN, _problem(409), (ReplyType.TEARDOWN_FAILED, None, False, "409")),
        (Operation.TEARDOWN, _problem(503), (ReplyType.TEARDOWN_FAILED, None, True, "503")),
    ],
)
def test_http_answers_map_to_replies_as_the_platform_reads_http(
    operation: Operation, answer: Answer, expected: tuple[Any, ...] | None
) -> None:
    reply = reply_for(operation, answer)
    if expected is None:
        assert reply.type is ReplyType.TORN_DOWN
        return
    reply_type, version, retryable, status = expected
    assert (reply.type, reply.version, reply.retryable) == (reply_type, version, retryable)
    assert reply.reason == (f"HTTP {status}: why" if status else None)


def _command(**changes: Any) -> bytes:
    command = {
        "type": "MigrateTenant",
        "commandId": "c-1",
        "attempt": 1,
        "idempotencyKey": "k",
        "tenantId": "acme",
        "storageMode": "SCHEMA",
        "token": "t",
        "replyTo": f"platform.replies.{SERVICE}",
    }
    return json.dumps({**command, **changes}).encode()


def test_a_command_envelope_is_read_and_the_rest_left_to_the_http_checks() -> None:
    command = parse_command(_command(jdbcUrl=None, extra="ignored"), SERVICE)
    assert command.operation is Operation.MIGRATE
    assert command.reply_msg_id == "c-1/1/reply"
    assert command.body == {"tenantId": "acme", "storageMode": "SCHEMA", "jdbcUrl": None}
    assert parse_command(_command(type="TeardownTenant"), SERVICE).operation is (Operation.TEARDOWN)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"{",
        b'"MigrateTenant"',
        _command(type="MigrateTenants"),
        _command(attempt=0),
        _command(attempt=True),
        _command(commandId=""),
        _command(tenantId=None),
        _command(replyTo="platform.replies.auth-service"),
    ],
)
def test_what_is_not_an_answerable_command_is_garbage(data: bytes) -> None:
    with pytest.raises(NotACommand):
        parse_command(data, SERVICE)


def test_consumer_mode_needs_a_nats_url_and_a_reply_key(platform: PlatformKey) -> None:
    with pytest.raises(pydantic.ValidationError, match="events_url"):
        DownstreamSettings(events_url="http://127.0.0.1:4222")
    settings = DownstreamSettings(events_url="nats://127.0.0.1:4222")
    assert settings.consumer_concurrency == 8
    with pytest.raises(ConsumerNotConfigured, match="DOWNSTREAM_REPLY_KEY_FILE"):
        settings.require_reply_key()
    assert DownstreamSettings().require_reply_key() is None


def test_command_line_exits_when_consumer_mode_has_no_reply_key(
    platform: PlatformKey, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE", str(platform.public_file))
    monkeypatch.setenv("DOWNSTREAM_EVENTS_URL", "nats://127.0.0.1:4222")
    with pytest.raises(SystemExit) as exit_:
        main(["--name", "auth-service", "--port", "1"])
    assert exit_.value.code == 2
    assert "set DOWNSTREAM_REPLY_KEY_FILE" in capsys.readouterr().err
