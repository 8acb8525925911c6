"""The NATS JetStream bus (the default): one stream over the platform's subjects.

Each event goes to `platform.<family>.<key>.<name>` (e.g. `platform.tenants.acme.status-changed`)
with `Nats-Msg-Id` = the CloudEvent id, so JetStream drops a re-publish of the same event within
the stream's duplicate window; the relay waits for the PubAck, which JetStream sends once the
message is stored.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from infra.events.bus import BusMessage, BusUnavailable

STREAM = "PLATFORM_EVENTS"
SUBJECTS = ["platform.tenants.>", "platform.rollouts.>"]
# Longer than a worker's restart, so a republish after a crash is dropped by the bus too.
DUPLICATE_WINDOW = timedelta(minutes=2)
PUBLISH_TIMEOUT = timedelta(seconds=5)
CONNECT_TIMEOUT = timedelta(seconds=2)
# A relay's connection reconnects for ever: the relay keeps the backlog meanwhile.
_RECONNECT_WAIT = timedelta(milliseconds=250)
_NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)


def subject_of(message: BusMessage) -> str:
    """The NATS subject of a message: `platform.<family>.<key>.<name>`."""
    return f"platform.{message.family}.{message.key}.{message.name}"


def stream_config() -> StreamConfig:
    """The platform's stream: file storage, its subjects, the duplicate window."""
    return StreamConfig(
        name=STREAM,
        subjects=SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
    )


class NatsBus:
    """An `EventBus` on NATS JetStream."""

    def __init__(self, url: str, *, publish_timeout: timedelta = PUBLISH_TIMEOUT) -> None:
        self._url = url
        self._timeout = publish_timeout
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect and create or update the stream; BusUnavailable if the server is away."""
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url)
            js = self._nc.jetstream(timeout=self._timeout.total_seconds())
            await declare_stream(js, stream_config())
            self._js = js
        except _NATS_FAILURES as exc:
            await self.close()
            raise BusUnavailable(f"NATS at {self._url}: {type(exc).__name__}: {exc}") from exc

    async def publish(self, message: BusMessage) -> None:
        """Publish and wait for the stream's PubAck."""
        if self._js is None:
            await self.start()
        assert self._js is not None
        try:
            await self._js.publish(
                subject_of(message),
                message.body,
                timeout=self._timeout.total_seconds(),
                stream=STREAM,
                headers={
                    "Nats-Msg-Id": message.event_id,
                    "Content-Type": "application/cloudevents+json",
                },
            )
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Flush what is buffered and disconnect."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except _NATS_FAILURES:
                await nc.close()


async def connect(url: str) -> NatsClient:
    """A connection that reconnects for ever: its users keep their work while the server is
    away (the relay its backlog, the command bus its waiting calls)."""
    return await nats.connect(
        url,
        connect_timeout=CONNECT_TIMEOUT.total_seconds(),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=_RECONNECT_WAIT.total_seconds(),
    )


async def declare_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # The stream exists with another configuration (an older duplicate window, say).
        await js.update_stream(config)
