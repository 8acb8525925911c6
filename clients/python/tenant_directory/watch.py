"""The platform's lifecycle events on NATS JetStream, as a feed of locations.

One connection that reconnects for ever; `broken` is set as soon as it drops or reports an
error, so the directory stops trusting its cache at once and follows anew (list, then watch)
once the connection is back. Each `follow` is an ordered consumer (ephemeral, in memory,
flow-controlled, recreated by the client on a gap) starting at a given stream sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import timedelta

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from tenant_directory.location import Location

STREAM = "PLATFORM_EVENTS"
SUBJECT = "platform.tenants.>"
CONNECT_TIMEOUT = timedelta(seconds=2)
RECONNECT_WAIT = timedelta(milliseconds=250)
# A connection that silently died is noticed after two unanswered pings.
PING_INTERVAL = timedelta(seconds=5)
NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)

_log = logging.getLogger("tenant_directory")


def location_of(body: bytes) -> Location | None:
    """The `data.location` of a lifecycle event; None for an event without one (an older
    platform's) or one that cannot be read."""
    try:
        event = json.loads(body)
        data = event["data"] if isinstance(event, dict) else None
        raw = data.get("location") if isinstance(data, dict) else None
        return None if raw is None else Location.from_json(raw)
    except (ValueError, KeyError) as exc:
        _log.warning("lifecycle event without a readable location skipped: %s", exc)
        return None


class EventFeed:
    """A NATS connection following `platform.tenants.>` of the `PLATFORM_EVENTS` stream."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._nc: NatsClient | None = None
        self.broken = asyncio.Event()
        self._up = asyncio.Event()
        self._reported = False

    async def connect(self) -> None:
        """Connect (once; the connection then reconnects by itself). Waits while the server is
        away, reporting each failed attempt through `broken`."""
        if self._nc is None:
            self._nc = await nats.connect(
                self._url,
                connect_timeout=CONNECT_TIMEOUT.total_seconds(),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_WAIT.total_seconds(),
                ping_interval=PING_INTERVAL.total_seconds(),
                max_outstanding_pings=2,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            )
            self._up.set()

    async def connected(self) -> None:
        """Return once the connection is up (at once if it is)."""
        await self._up.wait()

    async def follow(self, sequence: int, on_location: Callable[[Location], None]) -> Subscription:
        """Deliver the location of every tenant event stored at `sequence` and after, in
        order, to `on_location`."""
        assert self._nc is not None, "connect first"
        js = self._nc.jetstream()

        async def deliver(msg: Msg) -> None:
            location = location_of(msg.data)
            if location is not None:
                on_location(location)

        return await js.subscribe(
            SUBJECT,
            stream=STREAM,
            cb=deliver,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence
            ),
        )

    async def close(self) -> None:
        """Disconnect."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _on_disconnected(self) -> None:
        self._up.clear()
        self.broken.set()

    async def _on_reconnected(self) -> None:
        self._up.set()
        self._reported = False

    async def _on_error(self, exc: Exception) -> None:
        # One line per outage: a server that is away fails every reconnection attempt.
        level = logging.DEBUG if self._reported else logging.WARNING
        _log.log(level, "tenant events: %s: %s", type(exc).__name__, exc)
        self._reported = not self._up.is_set()
        self.broken.set()
