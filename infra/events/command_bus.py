"""Commands and replies on NATS JetStream: the transport of services with `"transport": "events"`.

The worker publishes each command to the commands stream and waits for the PubAck (the bus has
stored it); it reads replies through a durable pull consumer of its own task queue, so replies
that come while every worker is down wait in the stream, and the workers of one deployment
share them (each reply is handed to one of them). A reply is acknowledged once it was handled;
one whose handling failed for want of the platform's own database is handed out again later.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from enum import Enum

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from infra.events.bus import BusUnavailable
from infra.events.commands import (
    COMMANDS_STREAM,
    REPLIES_STREAM,
    Command,
    command_subject,
    reply_subject,
    streams,
)
from infra.events.nats import PUBLISH_TIMEOUT, connect, declare_stream

# A reply is handed out again if its handling has not finished in this time.
REPLY_ACK_WAIT = timedelta(seconds=30)
# How long a reply whose handling failed (the metadata database away) waits to be handed out again.
REPLY_RETRY_DELAY = timedelta(seconds=2)
_FETCH_BATCH = 32
_FETCH_WAIT = timedelta(seconds=1)
# How long the reply consumer waits before binding again after the bus went away.
_REBIND_WAIT = timedelta(seconds=1)
_NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)
_log = structlog.stdlib.get_logger("platform.commands")


class Handled(Enum):
    """What became of a reply: done with it (taken or ignored), or to be handed out again."""

    DONE = "done"
    AGAIN = "again"


ReplyHandler = Callable[[str, bytes], Awaitable[Handled]]


def consumer_name(task_queue: str) -> str:
    """The durable consumer of the workers of `task_queue` (NATS names allow no dots or
    wildcards)."""
    return "platform-" + re.sub(r"[^A-Za-z0-9_-]", "_", task_queue)


class CommandBus:
    """Publishes commands and runs the reply consumer, on one NATS connection."""

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        services: Sequence[str],
        publish_timeout: timedelta = PUBLISH_TIMEOUT,
    ) -> None:
        self._url = url
        self._consumer = consumer
        self._services = tuple(services)
        self._timeout = publish_timeout
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect, declare the two streams and the reply consumer; BusUnavailable if the
        server is away."""
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url)
            js = self._nc.jetstream(timeout=self._timeout.total_seconds())
            for config in streams():
                await declare_stream(js, config)
            await self._declare_consumer(js)
            self._js = js
        except _NATS_FAILURES as exc:
            await self.close()
            raise BusUnavailable(f"NATS at {self._url}: {type(exc).__name__}: {exc}") from exc

    async def _declare_consumer(self, js: JetStreamContext) -> None:
        config = ConsumerConfig(
            durable_name=self._consumer,
            filter_subjects=[reply_subject(name) for name in self._services],
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=REPLY_ACK_WAIT.total_seconds(),
            # From the stream's start the first time: replies that came before any worker of
            # this queue did are read too (a reply for nothing waiting is ignored).
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,
        )
        try:
            await js.add_consumer(REPLIES_STREAM, config)
        except nats.js.errors.BadRequestError:
            # It exists for another set of services: follow the configuration.
            await js.delete_consumer(REPLIES_STREAM, self._consumer)
            await js.add_consumer(REPLIES_STREAM, config)

    async def send(self, command: Command) -> None:
        """Publish one send of a command and wait for the stream's PubAck."""
        if self._js is None:
            await self.start()
        assert self._js is not None
        try:
            await self._js.publish(
                command_subject(command.service),
                command.body(),
                timeout=self._timeout.total_seconds(),
                stream=COMMANDS_STREAM,
                headers={"Nats-Msg-Id": command.message_id, "Content-Type": "application/json"},
            )
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def consume_replies(self, handle: ReplyHandler) -> None:
        """Hand every reply to `handle` (service name, message data) until cancelled; keeps
        going through the bus's absences."""
        while True:
            try:
                if self._js is None:
                    await self.start()
                assert self._js is not None
                subscription = await self._js.pull_subscribe_bind(
                    durable=self._consumer, stream=REPLIES_STREAM
                )
                await self._fetch_loop(subscription, handle)
            except (*_NATS_FAILURES, BusUnavailable) as exc:
                _log.warning("reply consumer interrupted", error=f"{type(exc).__name__}: {exc}")
                self._js = None
                await asyncio.sleep(_REBIND_WAIT.total_seconds())

    async def _fetch_loop(
        self, subscription: JetStreamContext.PullSubscription, handle: ReplyHandler
    ) -> None:
        while True:
            try:
                messages = await subscription.fetch(
                    _FETCH_BATCH, timeout=_FETCH_WAIT.total_seconds()
                )
            except TimeoutError:  # nats' own and asyncio's: no reply came in this wait
                continue
            await asyncio.gather(*(self._one(message, handle) for message in messages))

    @staticmethod
    async def _one(message: Msg, handle: ReplyHandler) -> None:
        service = message.subject.removeprefix("platform.replies.")
        if await handle(service, message.data) is Handled.AGAIN:
            await message.nak(delay=REPLY_RETRY_DELAY.total_seconds())
        else:
            await message.ack()

    async def close(self) -> None:
        """Disconnect (every publish was acknowledged already: nothing to drain)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()
