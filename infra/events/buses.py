"""Which bus the relay publishes to: `PLATFORM_EVENTS_BACKEND` and `PLATFORM_EVENTS_URL`.

Adapters are imported only when chosen, so a NATS deployment never loads librdkafka and the
other way round.
"""

from __future__ import annotations

import importlib
from typing import cast

from infra.events.bus import EventBus

BACKENDS = ("nats", "kafka", "none")


def make_bus(
    backend: str,
    url: str,
    *,
    kafka_topic_prefix: str | None = None,
    timeout: float = 10.0,
) -> EventBus | None:
    """The bus for `backend` at `url`; None for `none` (the outbox still records, nothing
    is published). Kafka's `url` is `kafka://host:port[,host:port]` or the bare list."""
    if backend == "none":
        return None
    if backend == "kafka":
        from infra.events.kafka import DEFAULT_TOPIC_PREFIX, KafkaBus, bootstrap_servers

        return KafkaBus(
            bootstrap_servers(url),
            topic_prefix=kafka_topic_prefix or DEFAULT_TOPIC_PREFIX,
            timeout=timeout,
        )
    if backend == "nats":
        # Looked up by name: the NATS adapter is built beside this module, in another change.
        nats = importlib.import_module("infra.events.nats")
        return cast(EventBus, nats.NatsBus(url))
    raise ValueError(f"unknown events backend {backend!r}; expected one of {', '.join(BACKENDS)}")
