"""The reply listener of event-driven calls: it takes each service's signed reply off the bus and
settles the activity attempt that waits for it (Temporal async activity completion), through the
same ledgers as an HTTP answer.

A reply is trusted only if one of the service's keys signed it; it counts only if a command
still waits for it (`CommandRepository.take_reply`). Everything else is logged, counted and
dropped, and changes nothing. A reply taken for an attempt whose wait already ran out completes
nothing; the command's row keeps a final reply, and the next attempt settles from it instead of
sending again.

A reply that no key of this worker verifies may be signed with a key another worker already
holds (a service rolling its key while the workers' settings roll out): it is handed back to
the bus for any worker to take, and dead-lettered only once it has been handed out
`unverified_deliveries` times. A reply naming a key this worker holds whose signature fails is
a forgery no worker can verify: dead-lettered at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.deletion import TeardownLedger
from activities.migrations import MigrationLedger
from infra.background import in_background
from infra.db.commands import CommandRepository, CommandRow
from infra.events.bus import BusUnavailable
from infra.events.command_bus import (
    UNVERIFIED_RETRY_DELAY,
    CommandBus,
    Handled,
    ReplyDelivery,
    ReplyHandler,
)
from infra.events.commands import (
    CommandType,
    Reply,
    ReplyKeys,
    ReplyOutcome,
    ReplyRefused,
    ReplyUnverified,
    verify_reply,
)
from infra.telemetry.metrics import command_reply

# How long a reply no key verifies goes round the workers before it is dead-lettered: time
# for a rolling deploy to bring the new key to some worker, and about as long as a reply stays
# valid (a few minutes) anyway.
UNVERIFIED_FOR = timedelta(minutes=5)
UNVERIFIED_DELIVERIES = int(UNVERIFIED_FOR / UNVERIFIED_RETRY_DELAY)
_log = structlog.stdlib.get_logger("platform.commands")


class ReplyListener:
    """Handles one reply at a time (`handle`); the bus's consumer calls it. `keys` are each
    service's reply keys by `kid`. `on_taken` hears of each reply taken for a command that
    waits in place (a rollout batch's)."""

    def __init__(
        self,
        client: Client,
        commands: CommandRepository,
        keys: Mapping[str, ReplyKeys],
        migrations: MigrationLedger,
        teardowns: TeardownLedger,
        meter: MetricMeter,
        on_taken: Callable[[str], None] = lambda command_id: None,
        unverified_deliveries: int = UNVERIFIED_DELIVERIES,
    ) -> None:
        self._on_taken = on_taken
        self._unverified_deliveries = unverified_deliveries
        self._client = client
        self._commands = commands
        self._keys = dict(keys)
        self._migrations = migrations
        self._teardowns = teardowns
        self._meter = meter

    async def handle(self, delivery: ReplyDelivery) -> Handled:
        """Verify, take and settle one reply."""
        service = delivery.service
        keys = self._keys.get(service)
        if not keys:
            return self._dropped(
                service, "refused", "reply from a service without transport events"
            )
        try:
            reply = verify_reply(delivery.data, service, keys)
        except ReplyUnverified as unverified:
            return self._unverified(delivery, unverified)
        except ReplyRefused as refused:
            return self._dropped(service, "refused", f"reply refused: {refused}")
        try:
            row = await self._commands.take_reply(reply)
        except Exception as exc:  # the metadata database: the reply waits in the stream
            _log.warning("reply not taken yet", service=service, error=type(exc).__name__)
            return Handled.AGAIN
        if row is None:
            return self._dropped(
                service,
                "ignored",
                "reply ignored: no command waits for it",
                command_id=reply.command_id,
                attempt=reply.attempt,
                type=reply.type.value,
            )
        command_reply(self._meter, service, "taken")
        _log.info(
            "reply taken",
            service=service,
            tenant_id=reply.tenant_id,
            command_id=reply.command_id,
            attempt=reply.attempt,
            type=reply.type.value,
        )
        if row.task_token is not None:
            await self._settle(row, reply, row.task_token)
        else:
            # A rollout batch waits in place and reads the row: wake it if it is ours.
            self._on_taken(row.command_id)
        return Handled.DONE

    def _unverified(self, delivery: ReplyDelivery, unverified: ReplyUnverified) -> Handled:
        """Hand it back for a worker holding its key, or dead-letter it (never logging the
        token itself)."""
        fields = {"service": delivery.service, "kid": unverified.kid}
        if unverified.elsewhere and delivery.deliveries < self._unverified_deliveries:
            command_reply(self._meter, delivery.service, "unverified")
            _log.info(
                "reply not verified by this worker's keys; handed back",
                deliveries=delivery.deliveries,
                **fields,
            )
            return Handled.UNVERIFIED
        command_reply(self._meter, delivery.service, "dead_lettered")
        _log.warning(
            "reply dead-lettered: no key verifies its signature"
            if unverified.elsewhere
            else "reply dead-lettered: it names a key it was not signed with (forged)",
            deliveries=delivery.deliveries,
            **fields,
        )
        return Handled.DEAD

    def _dropped(self, service: str, result: str, message: str, **fields: object) -> Handled:
        command_reply(self._meter, service, result)
        (_log.warning if result == "refused" else _log.info)(message, service=service, **fields)
        return Handled.DONE

    async def _settle(self, row: CommandRow, reply: Reply, task_token: bytes) -> None:
        """Complete or fail the waiting attempt as its HTTP twin would have ended."""
        handle = self._client.get_async_activity_handle(task_token=task_token)
        try:
            if CommandType(row.kind) is CommandType.MIGRATE:
                if reply.outcome is ReplyOutcome.SUCCEEDED:
                    result = await self._migrations.succeeded(self._meter, row, reply.version or "")
                    await handle.complete(result)
                    return
                ledger = (
                    self._migrations.rejected
                    if reply.outcome is ReplyOutcome.REJECTED
                    else self._migrations.failed
                )
                await handle.fail(await ledger(self._meter, row, reply.reason or ""))
                return
            if reply.outcome is ReplyOutcome.SUCCEEDED:
                await self._teardowns.succeeded(row.tenant_id, row.service)
                await handle.complete(None)
                return
            failure = (
                self._teardowns.rejected
                if reply.outcome is ReplyOutcome.REJECTED
                else self._teardowns.failed
            )
            await handle.fail(failure(reply.reason or ""))
        except RPCError as exc:
            # That attempt's wait ran out (NOT_FOUND), or Temporal is away: the attempt's
            # retry reads the row, where a final reply settles it and a failure is counted.
            _log.info(
                "reply outlived its attempt"
                if exc.status is RPCStatusCode.NOT_FOUND
                else "could not settle the attempt now",
                command_id=row.command_id,
                attempt=reply.attempt,
                error=str(exc),
            )
        except ApplicationError as exc:
            # A bookkeeping write failed (`metadata_failures`): likewise left to the retry.
            _log.warning("reply taken, attempt left to its timeout", error=str(exc))


@asynccontextmanager
async def consuming_replies(bus: CommandBus, handle: ReplyHandler) -> AsyncIterator[None]:
    """Hand the bus's replies to `handle` (a `ReplyListener`'s) while the context is open,
    then disconnect."""
    try:
        await bus.start()
    except BusUnavailable as exc:
        # Commands wait for it (their attempts fail and retry); the consumer keeps trying.
        _log.warning("command bus unavailable at start", error=str(exc))
    try:
        async with in_background(bus.consume_replies(handle), "reply-consumer"):
            yield
    finally:
        await bus.close()
