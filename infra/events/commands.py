"""The wire protocol of event-driven migrations (`"transport": "events"`): the commands the
platform publishes to a downstream service and the signed replies it takes back.

A command is the HTTP call's content as one JSON message on `platform.commands.<service>`: the
storage body, the idempotency key and the platform-signed token (what HTTP sends as
`Authorization: Bearer`), plus `commandId` (stable across re-sends) and `attempt` (one more per
re-send). The service answers on `platform.replies.<service>` with a compact JWS signed by its
own key, so a reply on the bus cannot be forged by whoever else can publish there. The handbook's
docs/integrating/event-driven-migrations.md is the contract for service authors.

A service may hold several keys while it rolls one: the platform holds each by its `kid`, the
key's RFC 7638 thumbprint, which the service computes alike without being told. A reply whose
header names a held `kid` is verified with that key only; one naming another `kid`, or none, is
tried against every key of the service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from infra.events.nats import DUPLICATE_WINDOW
from infra.security.keys import PublicKey, algorithm_for, load_public_key, public_jwk
from tenancy.failures import summarize
from tenancy.models import StorageLocation

COMMANDS_STREAM = "PLATFORM_COMMANDS"
REPLIES_STREAM = "PLATFORM_REPLIES"
# Commands and replies are kept a week: long enough for a service that is down over a
# weekend to find its commands when it comes back.
RETENTION = timedelta(days=7)
# The audience of every reply: the platform, whichever of its workers reads it.
REPLY_AUDIENCE = "platform-service"
# A reply older than this is refused (its `iat` is checked with this leeway too).
CLOCK_LEEWAY = timedelta(seconds=60)
# A `kid` as a log line shows it (a thumbprint is 43 characters; the header is the sender's).
_KID_SHOWN = 64
_COMMAND_IDS = uuid.UUID("6f1d7c52-8c1e-4b8e-9a51-0f3c2f8e1d42")


class CommandType(StrEnum):
    """What the platform asks of a service: its HTTP endpoint's twin."""

    MIGRATE = "MigrateTenant"
    TEARDOWN = "TeardownTenant"


class ReplyType(StrEnum):
    """What a service answers."""

    MIGRATED = "TenantMigrated"
    MIGRATION_FAILED = "TenantMigrationFailed"
    TORN_DOWN = "TenantTornDown"
    TEARDOWN_FAILED = "TenantTeardownFailed"


class ReplyOutcome(StrEnum):
    """What a reply means, as an HTTP status class means it for an HTTP call."""

    SUCCEEDED = "succeeded"
    # Worth another attempt (the service was busy, its database away, ...).
    FAILED = "failed"
    # Final: the service refused the command (a bad token, storage it cannot use, ...).
    REJECTED = "rejected"


_REPLIES: dict[CommandType, tuple[ReplyType, ReplyType]] = {
    CommandType.MIGRATE: (ReplyType.MIGRATED, ReplyType.MIGRATION_FAILED),
    CommandType.TEARDOWN: (ReplyType.TORN_DOWN, ReplyType.TEARDOWN_FAILED),
}


def command_subject(service: str) -> str:
    """Where a service's commands go."""
    return f"platform.commands.{service}"


def reply_subject(service: str) -> str:
    """Where a service's replies come back."""
    return f"platform.replies.{service}"


def command_id(kind: CommandType, idempotency_key: str) -> str:
    """The command of one logical call: the same for every re-send under its idempotency key."""
    return f"cmd-{uuid.uuid5(_COMMAND_IDS, f'{kind.value}:{idempotency_key}').hex}"


def streams() -> list[StreamConfig]:
    """The commands' and the replies' streams, exactly as the services declare them too."""
    return [
        StreamConfig(
            name=name,
            subjects=[subjects],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=RETENTION.total_seconds(),
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )
        for name, subjects in (
            (COMMANDS_STREAM, "platform.commands.>"),
            (REPLIES_STREAM, "platform.replies.>"),
        )
    ]


@dataclass(frozen=True)
class Command:
    """One send of a command: what goes on the bus."""

    type: CommandType
    command_id: str
    attempt: int
    service: str
    tenant_id: str
    location: StorageLocation
    idempotency_key: str
    token: str

    @property
    def message_id(self) -> str:
        """The bus's de-duplication id: one per send."""
        return f"{self.command_id}/{self.attempt}"

    def body(self, sent_at: datetime | None = None) -> bytes:
        """The JSON message (UTF-8)."""
        sent = (sent_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps(
            {
                "type": self.type.value,
                "commandId": self.command_id,
                "attempt": self.attempt,
                "idempotencyKey": self.idempotency_key,
                "tenantId": self.tenant_id,
                "storageMode": self.location.mode.value,
                "jdbcUrl": self.location.jdbc_url,
                "schema": self.location.schema_name,
                "database": self.location.database,
                "token": self.token,
                "replyTo": reply_subject(self.service),
                "sentAt": sent,
            }
        ).encode()


@dataclass(frozen=True)
class Reply:
    """A verified reply."""

    service: str
    type: ReplyType
    command_id: str
    attempt: int
    tenant_id: str
    outcome: ReplyOutcome
    version: str | None
    reason: str | None

    @property
    def kind(self) -> CommandType:
        """The kind of command this answers (a TenantTornDown never answers a MigrateTenant)."""
        return next(kind for kind, types in _REPLIES.items() if self.type in types)


# A service's reply keys by `kid`.
ReplyKeys = Mapping[str, PublicKey]


def load_reply_keys(paths: Iterable[Path]) -> dict[str, PublicKey]:
    """The public keys in the PEM files `paths` (private ones give their public half), by
    their RFC 7638 thumbprint."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        key = load_public_key(path)
        keys[str(public_jwk(key)["kid"])] = key
    return keys


class ReplyRefused(Exception):
    """A message on a replies subject that is not a reply the platform can trust."""


class ReplyUnverified(ReplyRefused):
    """No key held for the service verifies the reply's signature.

    `kid` is what its header names (None without one). `elsewhere`: whether a worker holding
    other keys of the service may verify it (the `kid` is not one held here, or there is none);
    a reply naming a held key that fails it is a forgery no worker can verify.
    """

    def __init__(self, kid: str | None, *, elsewhere: bool) -> None:
        self.kid = None if kid is None else kid[:_KID_SHOWN]
        self.elsewhere = elsewhere
        super().__init__(f"InvalidSignatureError: no key held verifies it (kid {self.kid})")


def verify_reply(data: bytes, service: str, keys: ReplyKeys) -> Reply:
    """The reply in `data`, a compact JWS that `service` signed with one of `keys`;
    ReplyUnverified if none of them verifies its signature, ReplyRefused with the reason
    otherwise (another issuer or audience, expired, malformed)."""
    try:
        token = data.decode("ascii").strip()
        kid = jwt.get_unverified_header(token).get("kid")
    except (UnicodeDecodeError, jwt.PyJWTError) as exc:
        raise ReplyRefused(f"{type(exc).__name__}: {exc}") from None
    kid = kid if isinstance(kid, str) else None
    held = kid is not None and kid in keys
    for key in [keys[kid]] if held and kid is not None else keys.values():
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm_for(key)],
                audience=REPLY_AUDIENCE,
                issuer=service,
                leeway=CLOCK_LEEWAY,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
            continue
        except jwt.PyJWTError as exc:
            raise ReplyRefused(f"{type(exc).__name__}: {exc}") from None
        return _reply(service, claims)
    raise ReplyUnverified(kid, elsewhere=not held)


def _reply(service: str, claims: dict[str, Any]) -> Reply:
    try:
        kind = ReplyType(claims["type"])
        command = claims["commandId"]
        attempt = claims["attempt"]
        tenant = claims["tenantId"]
    except (KeyError, ValueError) as exc:
        raise ReplyRefused(f"not a reply: {type(exc).__name__}: {exc}") from None
    if not (isinstance(command, str) and isinstance(tenant, str)):
        raise ReplyRefused("not a reply: commandId and tenantId must be strings")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ReplyRefused("not a reply: attempt must be a positive integer")
    version = claims.get("version")
    reason = claims.get("reason")
    if kind in (ReplyType.MIGRATED, ReplyType.TORN_DOWN):
        if kind is ReplyType.MIGRATED and not (isinstance(version, str) and version):
            raise ReplyRefused("TenantMigrated without a version")
        outcome = ReplyOutcome.SUCCEEDED
    else:
        # A failure is worth retrying unless the service says it is not (a rejection).
        retryable = claims.get("retryable", True) is not False
        outcome = ReplyOutcome.FAILED if retryable else ReplyOutcome.REJECTED
        reason = summarize(str(reason)) if reason else f"{kind.value} without a reason"
    return Reply(
        service=service,
        type=kind,
        command_id=command,
        attempt=attempt,
        tenant_id=tenant,
        outcome=outcome,
        version=str(version) if isinstance(version, str) else None,
        reason=reason if outcome is not ReplyOutcome.SUCCEEDED else None,
    )
