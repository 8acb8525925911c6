"""Which bus the relay publishes to (`PLATFORM_EVENTS_BACKEND`, `PLATFORM_EVENTS_URL`), and the
worker's relay to it.

The Kafka adapter is imported only when chosen, so a NATS deployment (the default) never loads
librdkafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.common import MetricMeter

from infra.events.bus import EventBus
from infra.events.nats import NatsBus, stream_config
from infra.events.relay import DEFAULT_TIMING, OutboxRelay, RelayTiming, running_relay
from tenancy.settings import Settings

BACKENDS = ("nats", "kafka", "none")


def make_bus(
    backend: str,
    url: str,
    *,
    kafka_topic_prefix: str | None = None,
    timeout: float = 10.0,
    stream_max_age: timedelta | None = None,
    stream_max_bytes: int | None = None,
) -> EventBus | None:
    """The bus for `backend` at `url`, not yet connected; None for `none` (the outbox still
    records, nothing is published). Kafka's `url` is `kafka://host:port[,host:port]` or the
    bare list. NATS creates its stream with the `stream_*` limits (None: none)."""
    if backend == "none":
        return None
    if backend == "nats":
        return NatsBus(url, stream=stream_config(stream_max_age, stream_max_bytes))
    if backend == "kafka":
        from infra.events.kafka import DEFAULT_TOPIC_PREFIX, KafkaBus, bootstrap_servers

        return KafkaBus(
            bootstrap_servers(url),
            topic_prefix=kafka_topic_prefix or DEFAULT_TOPIC_PREFIX,
            timeout=timeout,
        )
    raise ValueError(f"unknown events backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def bus_for(settings: Settings) -> EventBus | None:
    """The configured bus, not yet connected; None when publishing is off (`none`)."""
    return make_bus(
        settings.events_backend,
        settings.events_url,
        stream_max_age=settings.events_stream_max_age,
        stream_max_bytes=settings.events_stream_max_bytes,
    )


@asynccontextmanager
async def outbox_relay(
    settings: Settings,
    *,
    meter: MetricMeter | None = None,
    timing: RelayTiming = DEFAULT_TIMING,
) -> AsyncIterator[OutboxRelay | None]:
    """The relay to the configured bus, running while the context is open (None when off)."""
    bus = bus_for(settings)
    if bus is None:
        yield None
        return
    relay = OutboxRelay(
        settings.require_database_url(), bus, settings.events_source, meter=meter, timing=timing
    )
    async with running_relay(relay):
        yield relay
