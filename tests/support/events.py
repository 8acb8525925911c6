"""Reading lifecycle events back off the bus, as a consumer would, and checking them against
the published JSON Schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from infra.events.nats import STREAM, declare_events_stream, stream_config

SCHEMAS = Path(__file__).resolve().parents[2] / "events" / "schemas"


@cache
def schema_for(event_type: str) -> dict[str, Any]:
    """The JSON Schema of an event type (`events/schemas/<type>.json`)."""
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{event_type}.json").read_text())
    return loaded


def validate(event: dict[str, Any]) -> None:
    """Raise unless `event` matches its type's schema."""
    jsonschema.validate(event, schema_for(event["type"]), format_checker=jsonschema.FormatChecker())


@dataclass
class EventTap:
    """What an ordered JetStream consumer of a subject filter has received so far."""

    events: list[dict[str, Any]] = field(default_factory=list)
    msg_ids: list[str] = field(default_factory=list)

    def unique(self) -> list[dict[str, Any]]:
        """The events as a consumer de-duplicating by CloudEvent id sees them."""
        seen: set[str] = set()
        kept = []
        for event in self.events:
            if event["id"] not in seen:
                seen.add(event["id"])
                kept.append(event)
        return kept

    def types(self) -> list[str]:
        """The types received, in order."""
        return [event["type"] for event in self.events]


@asynccontextmanager
async def tap(url: str, subject: str) -> AsyncIterator[EventTap]:
    """An ordered consumer of `subject` on the platform's stream, from its first message."""
    received = EventTap()

    async def on_message(msg: Msg) -> None:
        received.events.append(json.loads(msg.data))
        received.msg_ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        # The relay declares it too; whoever comes first (a stream that exists keeps its limits).
        await declare_events_stream(js, stream_config())
        sub = await js.subscribe(
            subject,
            stream=STREAM,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        yield received
        await sub.unsubscribe()
    finally:
        await nc.close()


async def stored_count(url: str, subject: str) -> int:
    """How many messages of `subject` the stream stores (duplicates dropped by JetStream are
    not among them)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()
