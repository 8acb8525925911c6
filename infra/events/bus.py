"""What the outbox relay needs of a message bus, whichever it is.

The relay (one logic for every bus) hands each adapter `BusMessage`s in order per key and calls
`publish` one message at a time per key; an adapter only maps a message onto its bus (a NATS
subject with `Nats-Msg-Id`, a Kafka topic with the key) and raises `BusUnavailable` when the bus
cannot take it now (the relay keeps the event and tries again later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class BusUnavailable(Exception):
    """The bus did not acknowledge the message (down, unreachable, timed out); retry later."""


@dataclass(frozen=True)
class BusMessage:
    """One lifecycle event as it goes on the bus."""

    # The CloudEvent's `id`: the bus's de-duplication id and the consumers'.
    event_id: str
    # "tenants" or "rollouts": NATS subject family / Kafka topic family.
    family: str
    # The tenant id (or rollout id): order holds per key; Kafka's message key.
    key: str
    # The short event name, e.g. "status-changed" (the CloudEvent type without prefix/version).
    name: str
    # The CloudEvent, JSON structured mode (application/cloudevents+json).
    body: bytes


class EventBus(Protocol):
    """A connected bus the relay publishes to."""

    async def start(self) -> None:
        """Connect (and declare the stream or topics it needs); idempotent."""
        ...

    async def publish(self, message: BusMessage) -> None:
        """Publish and wait for the bus's acknowledgement; BusUnavailable if there is none."""
        ...

    async def close(self) -> None:
        """Flush and disconnect."""
        ...
