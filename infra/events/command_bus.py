"""Commands and replies on NATS JetStream: the transport of services with `"transport": "events"`.

The worker publishes each command to the commands stream and waits for the PubAck (the bus has
stored it). It reads each service's replies through a durable pull consumer of that service and
its task queue (`platform-<task queue>_<service>`, filter `platform.replies.<service>`), so
replies that come while every worker is down wait in the stream, the workers of one deployment
share them (each reply is handed to one of them), and workers whose sets of services differ
(a rolling deploy adding one) share the consumers of the services they have in common without
touching anyone's configuration. A worker creates a consumer that does not exist and never
updates or deletes one.

A new consumer starts at the replies published after it: the worker that sends a service's
command has created that service's consumer first, so every reply to a command it sent arrives
after its consumer exists, and one that comes while no worker runs waits in it. Older replies
answer commands nobody waits for now (replaying a week of them only costs). The one exception
is the consumer of the earlier layout, one per task queue (`platform-<task queue>`): when it
exists, a new per-service consumer starts after the last reply it acknowledged, so an upgrade
that stops every worker first loses nothing; it is left alone (delete it once no worker of an
earlier version runs).

A reply is acknowledged once it was handled. One whose handling failed for want of the
platform's own database is handed out again later; one that no key of this worker verifies is
handed back after a longer delay, for a worker that holds its key; one to drop is terminated
(dead-lettered: JetStream's MSG_TERMINATED advisory names its stream sequence).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from tenancy.settings import without_password

# A reply is handed out again if its handling has not finished in this time.
REPLY_ACK_WAIT = timedelta(seconds=30)
# How long a reply whose handling failed (the metadata database away) waits to be handed out again.
REPLY_RETRY_DELAY = timedelta(seconds=2)
# How long a reply no key of a worker verifies waits before it is handed out again (to any
# worker of the task queue: one holding its key takes it).
UNVERIFIED_RETRY_DELAY = timedelta(seconds=5)
_FETCH_BATCH = 32
_FETCH_WAIT = timedelta(seconds=1)
# How long the reply consumer waits before binding again after the bus went away.
_REBIND_WAIT = timedelta(seconds=1)
_NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)
_log = structlog.stdlib.get_logger("platform.commands")


class Handled(Enum):
    """What became of a reply: done with it (taken or ignored: acknowledged), to be handed out
    again (AGAIN soon, UNVERIFIED later, maybe to another worker), or dead-lettered (DEAD:
    terminated, never handed out again)."""

    DONE = "done"
    AGAIN = "again"
    UNVERIFIED = "unverified"
    DEAD = "dead"


@dataclass(frozen=True)
class ReplyDelivery:
    """One reply handed to a worker: its service, its data, and how many times it has been
    handed out so far (this time included)."""

    service: str
    data: bytes
    deliveries: int


ReplyHandler = Callable[[ReplyDelivery], Awaitable[Handled]]


def consumer_name(task_queue: str) -> str:
    """The prefix of the reply consumers of the workers of `task_queue` (NATS names allow no
    dots or wildcards), and the name of their one consumer in the earlier layout."""
    return "platform-" + re.sub(r"[^A-Za-z0-9_-]", "_", task_queue)


def service_consumer_name(consumer: str, service: str) -> str:
    """The durable consumer of `service`'s replies under the prefix `consumer` (service names
    hold no `_`, so the name splits back at its last one)."""
    return f"{consumer}_{service}"


class CommandBus:
    """Publishes commands and runs the reply consumers, on one NATS connection."""

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        services: Sequence[str],
        publish_timeout: timedelta = PUBLISH_TIMEOUT,
        unverified_delay: timedelta = UNVERIFIED_RETRY_DELAY,
    ) -> None:
        self._url = url
        self._consumer = consumer
        self._services = tuple(services)
        self._timeout = publish_timeout
        self._unverified_delay = unverified_delay
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Connect, declare the two streams and the reply consumers that do not exist yet;
        BusUnavailable if the server is away."""
        async with self._starting:
            await self._start()

    async def _start(self) -> None:
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self._url)
            js = self._nc.jetstream(timeout=self._timeout.total_seconds())
            for config in streams():
                await declare_stream(js, config)
            for service in self._services:
                await self._declare_consumer(js, service)
            self._js = js
        except _NATS_FAILURES as exc:
            await self.close()
            raise BusUnavailable(
                f"NATS at {without_password(self._url)}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _ready(self) -> JetStreamContext:
        async with self._starting:
            if self._js is None:
                await self._start()
            assert self._js is not None
            return self._js

    async def _declare_consumer(self, js: JetStreamContext, service: str) -> None:
        name = service_consumer_name(self._consumer, service)
        if await _consumer_exists(js, name):
            return
        legacy = await _acknowledged_up_to(js, self._consumer)
        config = ConsumerConfig(
            durable_name=name,
            filter_subject=reply_subject(service),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=REPLY_ACK_WAIT.total_seconds(),
            # The module's docstring says why a new consumer starts at new replies.
            deliver_policy=DeliverPolicy.NEW if legacy is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if legacy is None else legacy + 1,
            max_deliver=-1,
        )
        try:
            await js.add_consumer(REPLIES_STREAM, config)
            _log.info("reply consumer created", consumer=name, after_sequence=legacy)
        except nats.js.errors.BadRequestError:
            # Another worker created it meanwhile (its start sequence may differ): use that one.
            if not await _consumer_exists(js, name):
                raise

    async def send(self, command: Command) -> None:
        """Publish one send of a command and wait for the stream's PubAck."""
        js = self._js if self._js is not None else await self._ready()
        try:
            await js.publish(
                command_subject(command.service),
                command.body(),
                timeout=self._timeout.total_seconds(),
                stream=COMMANDS_STREAM,
                headers={"Nats-Msg-Id": command.message_id, "Content-Type": "application/json"},
            )
        except _NATS_FAILURES as exc:
            raise BusUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def consume_replies(self, handle: ReplyHandler) -> None:
        """Hand every reply of the bus's services to `handle` until cancelled; keeps going
        through the bus's absences."""
        async with asyncio.TaskGroup() as group:
            for service in self._services:
                group.create_task(self._consume(service, handle), name=f"replies-{service}")

    async def _consume(self, service: str, handle: ReplyHandler) -> None:
        while True:
            try:
                js = await self._ready()
                subscription = await js.pull_subscribe_bind(
                    durable=service_consumer_name(self._consumer, service), stream=REPLIES_STREAM
                )
                await self._fetch_loop(service, subscription, handle)
            except (*_NATS_FAILURES, BusUnavailable) as exc:
                _log.warning(
                    "reply consumer interrupted",
                    service=service,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._js = None
                await asyncio.sleep(_REBIND_WAIT.total_seconds())

    async def _fetch_loop(
        self, service: str, subscription: JetStreamContext.PullSubscription, handle: ReplyHandler
    ) -> None:
        while True:
            try:
                messages = await subscription.fetch(
                    _FETCH_BATCH, timeout=_FETCH_WAIT.total_seconds()
                )
            except TimeoutError:  # nats' own and asyncio's: no reply came in this wait
                continue
            await asyncio.gather(*(self._one(service, message, handle) for message in messages))

    async def _one(self, service: str, message: Msg, handle: ReplyHandler) -> None:
        delivery = ReplyDelivery(service, message.data, message.metadata.num_delivered)
        handled = await handle(delivery)
        if handled is Handled.AGAIN:
            await message.nak(delay=REPLY_RETRY_DELAY.total_seconds())
        elif handled is Handled.UNVERIFIED:
            await message.nak(delay=self._unverified_delay.total_seconds())
        elif handled is Handled.DEAD:
            await message.term()
        else:
            await message.ack()

    async def close(self) -> None:
        """Disconnect (every publish was acknowledged already: nothing to drain)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()


async def _consumer_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.consumer_info(REPLIES_STREAM, name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _acknowledged_up_to(js: JetStreamContext, name: str) -> int | None:
    """The last stream sequence the consumer `name` acknowledged; None if there is no such
    consumer."""
    try:
        info = await js.consumer_info(REPLIES_STREAM, name)
    except nats.js.errors.NotFoundError:
        return None
    return info.ack_floor.stream_seq if info.ack_floor is not None else 0
