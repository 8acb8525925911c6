"""A downstream service with transport events whose replies a test scripts per tenant: a real
consumer of the commands stream on a real NATS server, answering with replies signed by its
own key (or, on request, by another: a forgery), and recording every command it took.

Its replies name their key in the JWS header (`kid`, the key's RFC 7638 thumbprint) unless
`send_kid` is off; `key_file` may be swapped to roll its key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo

from infra.events.commands import (
    COMMANDS_STREAM,
    REPLIES_STREAM,
    REPLY_AUDIENCE,
    command_subject,
    reply_subject,
    streams,
)
from infra.security.keys import algorithm_for, generate_private_key, load_private_key, public_jwk

# A script step: ("ok", version) | ("fail", reason) | ("reject", reason) | ("silent", "").
Step = tuple[str, str]
OK: Step = ("ok", "events_0001")


@dataclass
class ScriptedEventsService:
    """Answers each command with the next scripted step for its tenant (the last one
    repeats; success at `version` when nothing is scripted)."""

    name: str
    key_file: Path
    js: JetStreamContext
    version: str = OK[1]
    send_kid: bool = True
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)

    def script(self, tenant_id: str, *steps: Step) -> None:
        """Answer the next commands for `tenant_id` with these steps, in order."""
        self.scripts[tenant_id] = list(steps)

    def of(self, tenant_id: str, kind: str = "MigrateTenant") -> list[dict[str, Any]]:
        """The commands taken for `tenant_id`, of `kind`, in order."""
        return [c for c in self.commands if c["tenantId"] == tenant_id and c["type"] == kind]

    @property
    def kid(self) -> str:
        """The `kid` of its current key."""
        return str(public_jwk(load_private_key(self.key_file))["kid"])

    def reply_token(
        self,
        claims: dict[str, Any],
        key_file: Path | None = None,
        headers: dict[str, Any] | None = None,
    ) -> bytes:
        """A compact JWS of `claims` (iss, aud, iat, exp and jti added), signed with this
        service's key or `key_file`, with `headers` (by default the signing key's `kid`, when
        `send_kid`)."""
        key = load_private_key(key_file or self.key_file)
        if headers is None:
            headers = {"kid": public_jwk(key)["kid"]} if self.send_kid else {}
        now = int(time.time())
        body = {
            "iss": self.name,
            "aud": REPLY_AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
            **claims,
        }
        return jwt.encode(body, key, algorithm=algorithm_for(key), headers=headers).encode()

    async def publish_reply(
        self,
        claims: dict[str, Any],
        key_file: Path | None = None,
        headers: dict[str, Any] | None = None,
    ) -> int:
        """Publish a reply of this service's (for the tests' unknown and forged replies); its
        stream sequence."""
        ack = await self.js.publish(
            f"platform.replies.{self.name}",
            self.reply_token(claims, key_file, headers),
            stream=None,
        )
        return int(ack.seq)

    async def _answer(self, message: Msg) -> None:
        command = json.loads(message.data)
        self.commands.append(command)
        steps = self.scripts.get(command["tenantId"]) or [("ok", self.version)]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        action, detail = step
        if action != "silent":
            await self.publish_reply(reply_claims(command, action, detail))
        await message.ack()


def reply_claims(command: dict[str, Any], action: str, detail: str) -> dict[str, Any]:
    """The claims of the reply to `command` for a script step."""
    migrate = command["type"] == "MigrateTenant"
    claims: dict[str, Any] = {
        "commandId": command["commandId"],
        "attempt": command["attempt"],
        "tenantId": command["tenantId"],
    }
    if action == "ok":
        claims["type"] = "TenantMigrated" if migrate else "TenantTornDown"
        if migrate:
            claims["version"] = detail
        return claims
    claims["type"] = "TenantMigrationFailed" if migrate else "TenantTeardownFailed"
    claims["retryable"] = action == "fail"
    claims["reason"] = detail
    return claims


@asynccontextmanager
async def scripted_events_service(
    nats_url: str, name: str, key_dir: Path
) -> AsyncIterator[ScriptedEventsService]:
    """Run a scripted service named `name` (its reply key in `key_dir/<name>.pem`)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for config in streams():
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.add_stream(config)
    service = ScriptedEventsService(name, key_dir / f"{name}.pem", js)
    generate_private_key(service.key_file)
    await js.add_consumer(
        COMMANDS_STREAM,
        ConsumerConfig(
            durable_name=name, filter_subject=command_subject(name), ack_policy=AckPolicy.EXPLICIT
        ),
    )
    subscription = await js.pull_subscribe_bind(durable=name, stream=COMMANDS_STREAM)

    async def serve() -> None:
        while True:
            try:
                messages = await subscription.fetch(16, timeout=0.5)
            except TimeoutError:
                continue
            for message in messages:
                await service._answer(message)

    task = asyncio.create_task(serve())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def reply_consumers(js: JetStreamContext, *services: str) -> dict[str, ConsumerInfo]:
    """The consumers of the replies stream that read any of `services`' replies, by name."""
    wanted = {reply_subject(name) for name in services}
    found: dict[str, ConsumerInfo] = {}
    for info in await js.consumers_info(REPLIES_STREAM):
        subjects = set(info.config.filter_subjects or ())
        if info.config.filter_subject:
            subjects.add(info.config.filter_subject)
        if subjects & wanted:
            found[info.name] = info
    return found
