"""The platform's commands on the bus (`MigrateTenant`, `TeardownTenant`) and how the HTTP
endpoint's answer to one becomes a reply.

A command carries what the HTTP call carries: the bearer token, the Idempotency-Key and the
storage body's five fields (`tenantId`, `storageMode`, `jdbcUrl`, `schema`, `database`), plus
its envelope (`type`, `commandId`, `attempt`, `replyTo`). Only the envelope is checked here: a
command without one cannot be answered and is garbage. Everything else is checked by the same
code as over HTTP, so a bad token or body gets the same answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from examples.downstream_service.calls import Answer, Operation
from examples.downstream_service.replies import ReplyType

COMMAND_SUBJECT_PREFIX = "platform.commands."
REPLY_SUBJECT_PREFIX = "platform.replies."
BODY_FIELDS = ("tenantId", "storageMode", "jdbcUrl", "schema", "database")
_OPERATIONS = {"MigrateTenant": Operation.MIGRATE, "TeardownTenant": Operation.TEARDOWN}
_MAX_ID = 200


class NotACommand(ValueError):
    """The message is not a command this service can answer (acked and logged, never retried)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command as received."""

    operation: Operation
    command_id: str
    attempt: int
    tenant_id: str
    reply_to: str
    idempotency_key: str | None
    token: str | None
    body: dict[str, Any]

    @property
    def reply_msg_id(self) -> str:
        """`Nats-Msg-Id` of the reply: the stream drops a second reply to the same attempt."""
        return f"{self.command_id}/{self.attempt}/reply"


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise NotACommand(f"{name} is missing or not a short string")
    return value


def parse_command(data: bytes, service_name: str) -> Command:
    """The command in a message's body; NotACommand if it has no answerable envelope.

    `replyTo` must be this service's reply subject: a command cannot steer where the
    service publishes.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NotACommand("not JSON") from None
    if not isinstance(document, dict):
        raise NotACommand("not a JSON object")
    kind = document.get("type")
    operation = _OPERATIONS.get(kind) if isinstance(kind, str) else None
    if operation is None:
        raise NotACommand("type is not MigrateTenant or TeardownTenant")
    attempt = document.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise NotACommand("attempt is not a positive integer")
    reply_to = _text(document, "replyTo")
    if reply_to != REPLY_SUBJECT_PREFIX + service_name:
        raise NotACommand(f"replyTo is not {REPLY_SUBJECT_PREFIX}{service_name}")
    key, token = document.get("idempotencyKey"), document.get("token")
    return Command(
        operation=operation,
        command_id=_text(document, "commandId"),
        attempt=attempt,
        tenant_id=_text(document, "tenantId"),
        reply_to=reply_to,
        # Checked as the HTTP header and bearer token are: missing means a 400 or 401 answer.
        idempotency_key=key if isinstance(key, str) else None,
        token=token if isinstance(token, str) else None,
        body={name: document[name] for name in BODY_FIELDS if name in document},
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """What a reply says, before it is signed."""

    type: ReplyType
    version: str | None = None
    retryable: bool | None = None
    reason: str | None = None


def _retryable(status: int) -> bool:
    # As the platform reads HTTP: 408, 429 and 5xx may succeed later; other 4xx are final.
    return status in (408, 429) or status >= 500


def reply_for(operation: Operation, answer: Answer) -> Reply:
    """The reply to a command the HTTP endpoint would have answered with `answer`."""
    if operation is Operation.MIGRATE:
        if 200 <= answer.status < 300:
            version = answer.body.get("version")
            if isinstance(version, str):
                return Reply(ReplyType.MIGRATED, version=version)
            return _failed(ReplyType.MIGRATION_FAILED, 500, "answer without a version")
        return _failed(ReplyType.MIGRATION_FAILED, answer.status, answer.detail)
    # A 404 of a teardown says the storage holds nothing of this service's: done.
    if 200 <= answer.status < 300 or answer.status == 404:
        return Reply(ReplyType.TORN_DOWN)
    return _failed(ReplyType.TEARDOWN_FAILED, answer.status, answer.detail)


def _failed(reply_type: ReplyType, status: int, detail: str) -> Reply:
    return Reply(
        reply_type,
        retryable=_retryable(status),
        reason=f"HTTP {status}: {detail}" if detail else f"HTTP {status}",
    )
