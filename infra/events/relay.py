"""The outbox relay: publishes the committed lifecycle events in order, at least once.

It runs in the worker process, started and stopped with the worker's resources: the worker
already holds the metadata database's settings, a metrics endpoint and a supervised lifetime,
and it is the process that writes most events. No separate process to deploy, watch and
scale, and since one relay publishes at a time per database (the advisory lock of
`infra.db.outbox.OutboxLease`), more worker processes add standbys, not duplicates: a relay
that does not hold the lock waits and takes over when the holder's session ends (its process
died or it stopped). Each relay's `platform_outbox_relay_leader` gauge is 1 while it holds the
lock and 0 while it stands by (or after it lost the lock).

The holder reads unpublished events in `seq` order in batches, publishes them one by one and
waiting for each acknowledgement (so a tenant's events reach the bus in the order they were
committed), and stamps the acknowledged ones in one UPDATE. A bus that does not acknowledge
(`BusUnavailable`) stops the batch: the event stays in the backlog and the relay tries again
after an exponential back-off. A crash between the bus's acknowledgement and the stamp means
the next holder publishes that event again under the same id, which the bus (JetStream's
duplicate window) and consumers (the CloudEvent `id`) drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from temporalio.common import MetricMeter

from infra.db.outbox import Backlog, OutboxLease, OutboxRow
from infra.events.bus import BusMessage, BusUnavailable, EventBus
from infra.events.cloudevents import with_source
from infra.telemetry.metrics import outbox_backlog, outbox_published, relay_leader

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayTiming:
    """How often the relay looks, how much it takes at once and how it backs off."""

    # Between tries for the lock held by another relay, and the longest wait at an empty
    # outbox: the holder is woken as soon as new events commit (LISTEN, migration 0016), so
    # this only bounds what a lost notification could cost.
    poll_interval: timedelta = timedelta(milliseconds=250)
    batch_size: int = 100
    # Back-off while the bus is away (or the database is): doubled per failure up to the cap.
    initial_backoff: timedelta = timedelta(milliseconds=250)
    max_backoff: timedelta = timedelta(seconds=5)


DEFAULT_TIMING = RelayTiming()


def message_of(row: OutboxRow, source: str) -> BusMessage:
    """The bus message of an outbox row."""
    body = json.dumps(with_source(row.event, source), separators=(",", ":")).encode()
    return BusMessage(
        event_id=row.id, family=row.family, key=row.subject_key, name=row.name, body=body
    )


class OutboxRelay:
    """One relay: waits for the lock, then publishes the backlog until stopped."""

    def __init__(
        self,
        database_url: str,
        bus: EventBus,
        source: str,
        *,
        meter: MetricMeter | None = None,
        timing: RelayTiming = DEFAULT_TIMING,
    ) -> None:
        self._url = database_url
        self._bus = bus
        self._source = source
        self._meter = meter
        self._timing = timing
        self._stop = asyncio.Event()
        # Events this relay saw acknowledged, for tests and logs.
        self.published = 0
        self.holds_lock = False

    async def close_bus(self) -> None:
        """Close the bus connection; a bus already gone is no error at shutdown."""
        try:
            await self._bus.close()
        except Exception as exc:
            _log.warning("closing the event bus: %s", exc)

    def stop(self) -> None:
        """Ask the relay to end after the event it is publishing."""
        self._stop.set()

    async def run(self) -> None:
        """Relay until `stop()`; a lost database connection or bus is waited out, never fatal."""
        backoff = self._timing.initial_backoff
        self._lead(False)
        while not self._stop.is_set():
            try:
                async with OutboxLease(self._url) as lease:
                    await self._hold_and_publish(lease)
                self._lead(False)
                backoff = self._timing.initial_backoff
            except Exception as exc:
                # The relay never ends while the worker runs: a database that went away is
                # waited out, and so is anything unforeseen (logged with its traceback).
                if isinstance(exc, psycopg.Error | OSError):
                    _log.warning("event relay waits %.2fs: %s", backoff.total_seconds(), exc)
                else:
                    _log.exception("event relay failed; retry in %.2fs", backoff.total_seconds())
                self._lead(False)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._timing.max_backoff)

    async def _hold_and_publish(self, lease: OutboxLease) -> None:
        backoff = self._timing.initial_backoff
        bus_started = False
        while not self._stop.is_set():
            if not await lease.try_acquire():
                self._record(await lease.backlog())
                await self._sleep(self._timing.poll_interval)
                continue
            if not self.holds_lock:
                _log.info("event relay holds the outbox lock")
                self._lead(True)
                await lease.listen()
            try:
                # Connected once the lock is held: a standby needs no bus connection.
                if not bus_started:
                    await self._bus.start()
                    bus_started = True
                sent = await self._publish_batch(lease)
            except BusUnavailable as exc:
                _log.warning(
                    "event bus unavailable, backlog kept; next try in %.2fs: %s",
                    backoff.total_seconds(),
                    exc,
                )
                self._record(await lease.backlog())
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._timing.max_backoff)
                continue
            backoff = self._timing.initial_backoff
            self._record(await lease.backlog())
            if sent < self._timing.batch_size:
                await self._wait_for_events(lease)

    async def _publish_batch(self, lease: OutboxLease) -> int:
        """Publish the next batch in order; returns how many the bus acknowledged."""
        rows = await lease.unpublished(self._timing.batch_size)
        acked: list[OutboxRow] = []
        try:
            for row in rows:
                if self._stop.is_set():
                    break
                try:
                    await self._bus.publish(message_of(row, self._source))
                except BusUnavailable as exc:
                    await lease.mark_failed(row.id, str(exc) or type(exc).__name__)
                    raise
                acked.append(row)
        finally:
            # Stamp what was acknowledged even when the batch stopped half-way.
            await lease.mark_published([row.id for row in acked])
            self._count(acked)
        return len(acked)

    def _count(self, rows: list[OutboxRow]) -> None:
        self.published += len(rows)
        if self._meter is not None:
            for row in rows:
                outbox_published(self._meter, row.family)

    def _lead(self, holds_lock: bool) -> None:
        """Note whether this relay holds the outbox lock, and show it on its gauge."""
        self.holds_lock = holds_lock
        if self._meter is not None:
            relay_leader(self._meter, holds_lock)

    def _record(self, backlog: Backlog) -> None:
        if self._meter is not None:
            outbox_backlog(self._meter, backlog.count, backlog.oldest)

    async def _wait_for_events(self, lease: OutboxLease) -> None:
        """Until new events commit or the poll interval passes (a stop is seen after it, as
        after a sleep)."""
        await lease.wait_for_events(self._timing.poll_interval)

    async def _sleep(self, delay: timedelta) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay.total_seconds())


@asynccontextmanager
async def running_relay(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    """Run `relay` in a task while the context is open; stop it and close its bus on exit."""
    task = asyncio.create_task(relay.run(), name="outbox-relay")
    try:
        yield relay
    finally:
        relay.stop()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await relay.close_bus()
