"""The NATS JetStream bus (the default): one stream over the platform's subjects.

Each event goes to `platform.<family>.<key>.<name>` (e.g. `platform.tenants.acme.status-changed`)
with `Nats-Msg-Id` = the CloudEvent id, so JetStream drops a re-publish of the same event within
the stream's duplicate window; the relay waits for the PubAck, which JetStream sends once the
message is stored.

The stream is created with the limits of the settings (`PLATFORM_EVENTS_STREAM_MAX_AGE`,
`PLATFORM_EVENTS_STREAM_MAX_BYTES`); a stream that exists keeps its limits, so an operator's
change on the server survives every worker start (`declare_events_stream`).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from infra.events.bus import BusMessage, BusUnavailable
from tenancy.settings import without_password

STREAM = "PLATFORM_EVENTS"
SUBJECTS = ["platform.tenants.>", "platform.rollouts.>"]
# Longer than a worker's restart, so a republish after a crash is dropped by the bus too.
DUPLICATE_WINDOW = timedelta(minutes=2)
PUBLISH_TIMEOUT = timedelta(seconds=5)
CONNECT_TIMEOUT = timedelta(seconds=2)
# A readiness check of the bus gives up after this (the probe's own timeout is longer).
PROBE_TIMEOUT = timedelta(seconds=1)
# The directory's listing waits at most this for the stream's position (else it gives none).
POSITION_TIMEOUT = timedelta(milliseconds=500)
# A relay's connection reconnects for ever: the relay keeps the backlog meanwhile.
_RECONNECT_WAIT = timedelta(milliseconds=250)
_NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)
# The limits of the lifecycle stream that are the operator's once it exists.
_STREAM_LIMITS = ("max_age", "max_bytes")
_log = structlog.stdlib.get_logger("platform.events")


def subject_of(message: BusMessage) -> str:
    """The NATS subject of a message: `platform.<family>.<key>.<name>`."""
    return f"platform.{message.family}.{message.key}.{message.name}"


def stream_config(max_age: timedelta | None = None, max_bytes: int | None = None) -> StreamConfig:
    """The platform's stream: file storage, its subjects, the duplicate window, and the limits
    it is created with (None: no limit)."""
    return StreamConfig(
        name=STREAM,
        subjects=SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        max_age=None if max_age is None else max_age.total_seconds(),
        max_bytes=max_bytes,
    )


class NatsBus:
    """An `EventBus` on NATS JetStream."""

    def __init__(
        self,
        url: str,
        *,
        stream: StreamConfig | None = None,
        publish_timeout: timedelta = PUBLISH_TIMEOUT,
    ) -> None:
        self._url = url
        self._stream = stream or stream_config()
        self._timeout = publish_timeout
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect and declare the stream (`declare_events_stream`); BusUnavailable if the
        server is away."""
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url)
            js = self._nc.jetstream(timeout=self._timeout.total_seconds())
            await declare_events_stream(js, self._stream)
            self._js = js
        except _NATS_FAILURES as exc:
            await self.close()
            raise BusUnavailable(
                f"NATS at {without_password(self._url)}: {type(exc).__name__}: {exc}"
            ) from exc

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


class BusProbe:
    """Whether the NATS server answers with JetStream, checked on one connection kept for the
    checks (made on the first, made again after it closed): `/readyz`'s command-bus check."""

    def __init__(self, url: str, *, timeout: timedelta = PROBE_TIMEOUT) -> None:
        self._url = url
        self._timeout = timeout
        self._nc: NatsClient | None = None

    async def check(self) -> None:
        """Return once JetStream answered; BusUnavailable if it does not within the timeout."""
        try:
            await asyncio.wait_for(self._ask(), self._timeout.total_seconds())
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _ask(self) -> None:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect(self._url)
        if not self._nc.is_connected:
            # The connection is reconnecting: the server is away.
            raise BusUnavailable(f"NATS at {without_password(self._url)} is not connected")
        await self._nc.jetstream(timeout=self._timeout.total_seconds()).account_info()

    async def close(self) -> None:
        """Disconnect."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()


class StreamPosition:
    """The lifecycle stream's last sequence number, read on one connection kept for it (made on
    the first read, made again after it closed): where the tenant directory's listing tells a
    client to start following the events."""

    def __init__(self, url: str, *, timeout: timedelta = POSITION_TIMEOUT) -> None:
        self._url = url
        self._timeout = timeout
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()

    async def last_sequence(self) -> int:
        """The sequence of the stream's last message (0 while it holds none or does not exist
        yet); BusUnavailable if NATS does not answer within the timeout."""
        try:
            return await asyncio.wait_for(self._ask(), self._timeout.total_seconds())
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _ask(self) -> int:
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url)
        if not self._nc.is_connected:
            raise BusUnavailable(f"NATS at {without_password(self._url)} is not connected")
        js = self._nc.jetstream(timeout=self._timeout.total_seconds())
        try:
            info = await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            # No event was ever published: the first one will be sequence 1.
            return 0
        return int(info.state.last_seq)

    async def close(self) -> None:
        """Disconnect."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
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


async def declare_events_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the lifecycle stream with `config` if it is absent. One that exists keeps its
    limits (what differs from `config` is logged); only the platform's own fields, its
    subjects and duplicate window (an older platform's, say), are brought to `config`."""
    name = config.name or STREAM
    try:
        existing = (await js.stream_info(name)).config
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError:
            # Another worker created it meanwhile, maybe with other limits: those stay.
            existing = (await js.stream_info(name)).config
    kept = {
        limit: {"on_server": getattr(existing, limit), "configured": getattr(config, limit)}
        for limit in _STREAM_LIMITS
        if _limit(getattr(existing, limit)) != _limit(getattr(config, limit))
    }
    if kept:
        _log.info("stream limits kept as set on the server", stream=name, limits=kept)
    if existing.subjects != config.subjects or existing.duplicate_window != config.duplicate_window:
        await js.update_stream(
            replace(existing, subjects=config.subjects, duplicate_window=config.duplicate_window)
        )


def _limit(value: float | None) -> float:
    # The server reports an absent limit as -1 (max_bytes) or 0 (max_age).
    return -1 if value is None or value <= 0 else value
