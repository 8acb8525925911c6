"""The bus `PLATFORM_EVENTS_BACKEND` names, and the worker's relay to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.common import MetricMeter

from infra.events.bus import EventBus
from infra.events.nats import NatsBus
from infra.events.relay import DEFAULT_TIMING, OutboxRelay, RelayTiming, running_relay
from tenancy.settings import Settings


def bus_for(settings: Settings) -> EventBus | None:
    """The configured bus, not yet connected; None when publishing is off (`none`)."""
    if settings.events_backend == "none":
        return None
    if settings.events_backend == "nats":
        return NatsBus(settings.events_url)
    raise ValueError(f"no event bus adapter for {settings.events_backend!r} in this build")


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
