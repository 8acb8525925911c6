"""Consumer mode: the platform's `MigrateTenant` and `TeardownTenant` commands from NATS
JetStream, answered with signed replies (the protocol of issue 13, part 4).

The service pulls from its durable consumer `<service-name>` on `PLATFORM_COMMANDS` (subject
`platform.commands.<service-name>`, explicit ack, ack_wait 60 s). Each command is answered
exactly as the HTTP endpoint answers the same call (`calls.PlatformCalls`, the code the routes
run), the answer becomes a signed reply (`commands.reply_for`, `replies.ReplySigner`) published
with JetStream on `platform.replies.<service-name>`, and only once JetStream has stored the reply
is the command acked. While a long migration runs the command is marked in progress, so it is not
redelivered meanwhile; at most `DOWNSTREAM_CONSUMER_CONCURRENCY` commands run at once, each in a
thread of the consumer's own pool, so the blocking migration code never holds up the NATS loop.

What is not answered: a message that is not a command (not JSON, unknown type, no envelope) is
acked and logged, never retried. A command whose token's `jti` is already used (a redelivery) is
answered from the idempotency record (`answers`) if its first delivery finished, else dropped;
a command whose token expired while it waited on the bus is dropped too. The platform re-sends
either under the same idempotency key with a fresh token after its timeout. A reply that cannot
be published leaves the command unacked (`nak` with a delay): its redelivery is answered from
the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from examples.downstream_service.answers import CommandAnswers
from examples.downstream_service.calls import Answer, PlatformCalls
from examples.downstream_service.commands import (
    COMMAND_SUBJECT_PREFIX,
    Command,
    NotACommand,
    parse_command,
    reply_for,
)
from examples.downstream_service.errors import DownstreamError, TokenExpired, TokenReplayed
from examples.downstream_service.replies import ReplySigner

_log = logging.getLogger(__name__)

COMMANDS_STREAM = "PLATFORM_COMMANDS"
REPLIES_STREAM = "PLATFORM_REPLIES"
STREAM_MAX_AGE = timedelta(days=7)
DUPLICATE_WINDOW = timedelta(seconds=120)
ACK_WAIT = timedelta(seconds=60)
# Well inside ack_wait, so a slow heartbeat still lands before the redelivery would.
PROGRESS_INTERVAL = timedelta(seconds=15)
# Short, so a stop (which lets the pending fetch finish rather than lose what it brings) is quick.
FETCH_WAIT = timedelta(milliseconds=500)
REQUEST_TIMEOUT = timedelta(seconds=5)
# Before a command whose reply was not published, or that could not be decided, comes again.
RETRY_DELAY = timedelta(seconds=2)
_CONNECT_BACKOFF = timedelta(seconds=2)
_NATS_FAILURES = (nats.errors.Error, OSError, asyncio.TimeoutError)


def stream_configs() -> list[StreamConfig]:
    """The two streams of the protocol, in exactly its configuration."""
    return [
        StreamConfig(
            name=name,
            subjects=[subjects],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=STREAM_MAX_AGE.total_seconds(),
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )
        for name, subjects in (
            (COMMANDS_STREAM, "platform.commands.>"),
            (REPLIES_STREAM, "platform.replies.>"),
        )
    ]


async def ensure_streams(js: JetStreamContext) -> None:
    """Create both streams, or bring existing ones to the protocol's configuration."""
    for config in stream_configs():
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # It exists with another configuration: the platform may have made it first.
            await js.update_stream(config)


async def _nats_error(exc: Exception) -> None:
    # One line instead of nats-py's traceback per failed connection attempt.
    _log.warning("NATS: %s: %s", type(exc).__name__, exc)


async def _disconnected() -> None:
    _log.warning("disconnected from NATS; reconnecting")


async def _reconnected() -> None:
    _log.info("reconnected to NATS")


def consumer_config(service_name: str) -> ConsumerConfig:
    """The service's durable pull consumer on its command subject."""
    return ConsumerConfig(
        name=service_name,
        durable_name=service_name,
        filter_subject=COMMAND_SUBJECT_PREFIX + service_name,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT.total_seconds(),
    )


class CommandConsumer:
    """Takes commands off the bus for one service until stopped. Runs on an asyncio loop."""

    def __init__(
        self,
        *,
        url: str,
        service_name: str,
        calls: PlatformCalls,
        answers: CommandAnswers,
        signer: ReplySigner,
        concurrency: int,
    ) -> None:
        self._url = url
        self._service = service_name
        self._calls = calls
        self._answers = answers
        self._signer = signer
        self._concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="command")
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._nc: NatsClient | None = None
        # Set once the durable consumer is bound (for tests and start-up logs); never cleared.
        self.ready = threading.Event()

    def start(self) -> None:
        """Start consuming in the background on the running loop (connecting until it can)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="commands")

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop fetching, give commands in flight `grace` to finish, and disconnect.

        A command still running after that stays unacked, and JetStream redelivers it.
        """
        self._stopping.set()
        if self._task is not None:
            # Unbound, nothing is in flight: the first connection to a server that never came
            # up retries inside nats-py, and is simply abandoned.
            if self.ready.is_set():
                await asyncio.wait({self._task}, timeout=grace.total_seconds())
            if not self._task.done():
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace.total_seconds())
        for task in self._in_flight:
            task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(*_NATS_FAILURES):
                await self._nc.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        subscription = await self._subscribe()
        if subscription is None:
            return
        _log.info("%s consuming commands from %s", self._service, COMMANDS_STREAM)
        while not self._stopping.is_set():
            free = self._concurrency - len(self._in_flight)
            if free <= 0:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await subscription.fetch(free, timeout=FETCH_WAIT.total_seconds())
            except TimeoutError:  # nats.errors.TimeoutError too: nothing to fetch right now
                continue
            except Exception as exc:
                # The client reconnects by itself; bind again (the consumer or the streams may
                # be gone with a server that lost its storage), after a moment so as not to spin.
                _log.warning("fetching commands failed: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(*_NATS_FAILURES):
                    await subscription.unsubscribe()
                await self._pause(_CONNECT_BACKOFF)
                subscription = await self._subscribe()
                if subscription is None:
                    return
                continue
            for msg in messages:
                task = asyncio.get_running_loop().create_task(self._handle(msg))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _subscribe(self) -> JetStreamContext.PullSubscription | None:
        """Connect, ensure the streams and bind the durable consumer; retried until stopped."""
        subject = COMMAND_SUBJECT_PREFIX + self._service
        while not self._stopping.is_set():
            try:
                if self._nc is None or self._nc.is_closed:
                    self._nc = await nats.connect(
                        self._url,
                        name=self._service,
                        connect_timeout=REQUEST_TIMEOUT.total_seconds(),
                        allow_reconnect=True,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=0.5,
                        error_cb=_nats_error,
                        disconnected_cb=_disconnected,
                        reconnected_cb=_reconnected,
                    )
                js = self._js()
                await ensure_streams(js)
                try:
                    await js.add_consumer(COMMANDS_STREAM, consumer_config(self._service))
                except nats.js.errors.BadRequestError as exc:
                    # It exists with settings of another version: use it as it is.
                    _log.warning("consumer %s kept as it is: %s", self._service, exc)
                subscription = await js.pull_subscribe_bind(
                    durable=self._service, stream=COMMANDS_STREAM
                )
                _log.debug("bound to %s on %s", subject, COMMANDS_STREAM)
                self.ready.set()
                return subscription
            except Exception as exc:
                _log.warning(
                    "%s cannot consume commands yet (%s: %s); trying again",
                    self._service,
                    type(exc).__name__,
                    exc,
                )
                await self._pause(_CONNECT_BACKOFF)
        return None

    def _js(self) -> JetStreamContext:
        assert self._nc is not None
        return self._nc.jetstream(timeout=REQUEST_TIMEOUT.total_seconds())

    async def _pause(self, delay: timedelta) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay.total_seconds())

    async def _handle(self, msg: Msg) -> None:
        try:
            command = parse_command(msg.data, self._service)
        except NotACommand as exc:
            _log.warning("dropped a message on %s that is not a command: %s", msg.subject, exc)
            await self._settle(msg.ack())
            return
        try:
            answer = await self._decide_with_progress(msg, command)
        except Exception:
            _log.exception(
                "command %s/%s not decided; retrying", command.command_id, command.attempt
            )
            await self._settle(msg.nak(delay=RETRY_DELAY.total_seconds()))
            return
        if answer is not None:
            try:
                await self._reply(command, answer)
            except _NATS_FAILURES as exc:
                _log.warning(
                    "reply to %s/%s not published (%s: %s); the command comes again",
                    command.command_id,
                    command.attempt,
                    type(exc).__name__,
                    exc,
                )
                await self._restore_streams()
                await self._settle(msg.nak(delay=RETRY_DELAY.total_seconds()))
                return
        await self._settle(msg.ack())

    async def _decide_with_progress(self, msg: Msg, command: Command) -> Answer | None:
        """Decide in a worker thread, telling JetStream the command is in progress meanwhile."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._decide, command)
        while True:
            done, _ = await asyncio.wait({future}, timeout=PROGRESS_INTERVAL.total_seconds())
            if done:
                return future.result()
            await self._settle(msg.in_progress())

    def _decide(self, command: Command) -> Answer | None:
        """What to answer (blocking), or None to drop the command without an answer."""
        key = command.idempotency_key or ""
        try:
            answer, call = self._calls.answer(
                command.operation,
                command.tenant_id,
                command.body,
                command.idempotency_key,
                command.token,
            )
        except TokenReplayed as exc:
            recorded = self._answers.find(exc.jti, key)
            if recorded is None:
                _log.info(
                    "dropped command %s/%s: its token was used and no answer is recorded "
                    "(the first delivery is running or died); the platform sends it again",
                    command.command_id,
                    command.attempt,
                )
            else:
                _log.info(
                    "command %s/%s came again: answered from the idempotency record",
                    command.command_id,
                    command.attempt,
                )
            return recorded
        except TokenExpired:
            _log.info(
                "dropped command %s/%s: its token expired while it waited; the platform sends "
                "it again with a fresh one",
                command.command_id,
                command.attempt,
            )
            return None
        if call is not None:
            try:
                self._answers.record(call.jti, key, answer, call.remembered_until)
            except DownstreamError as exc:
                # The answer still goes out; only a redelivery would miss the record.
                _log.warning("answer to %s not recorded: %s", command.command_id, exc.detail)
        return answer

    async def _reply(self, command: Command, answer: Answer) -> None:
        reply = reply_for(command.operation, answer)
        token = self._signer.sign(
            reply.type,
            command_id=command.command_id,
            attempt=command.attempt,
            tenant_id=command.tenant_id,
            version=reply.version,
            retryable=reply.retryable,
            reason=reply.reason,
        )
        ack = await self._js().publish(
            command.reply_to,
            token,
            timeout=REQUEST_TIMEOUT.total_seconds(),
            stream=REPLIES_STREAM,
            headers={"Nats-Msg-Id": command.reply_msg_id},
        )
        _log.info(
            "replied %s to %s/%s (tenant %s)%s",
            reply.type,
            command.command_id,
            command.attempt,
            command.tenant_id,
            " again" if ack.duplicate else "",
        )

    async def _restore_streams(self) -> None:
        try:
            await ensure_streams(self._js())
        except _NATS_FAILURES as exc:
            _log.warning("streams not ensured: %s: %s", type(exc).__name__, exc)

    async def _settle(self, action: Awaitable[None]) -> None:
        # Ack, nak, in-progress: a lost one only means a redelivery, which is answered again.
        try:
            await action
        except _NATS_FAILURES as exc:
            _log.warning("command not acknowledged: %s: %s", type(exc).__name__, exc)
