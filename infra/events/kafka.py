"""The Kafka adapter: a `BusMessage` onto a Kafka topic, nothing more.

Mapping (the CloudEvents Kafka protocol binding, structured mode):

- topic: `<prefix>.<family>`, by default `platform.tenants` and `platform.rollouts`;
- key: `BusMessage.key` (the tenant or rollout id), so every event of one tenant lands in one
  partition and keeps its order there;
- value: the CloudEvent itself (`BusMessage.body`, JSON);
- headers: `content-type: application/cloudevents+json` (what structured mode requires) and
  `ce_id`, the event id, so a consumer can drop duplicates without parsing the value.

The producer is idempotent (`enable.idempotence`, hence `acks=all`): a retry inside librdkafka
never writes a message twice. A retry by the relay (after `BusUnavailable`) may; consumers
deduplicate by `ce_id`. Topics are not created here: the broker auto-creates them (Redpanda
in dev mode, Kafka with `auto.create.topics.enable`) or an operator creates them beforehand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from infra.events.bus import BusMessage, BusUnavailable

CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_TOPIC_PREFIX = "platform"
URL_SCHEME = "kafka://"

# librdkafka logs through it instead of writing to stderr.
_log = logging.getLogger(__name__)


def bootstrap_servers(url: str) -> str:
    """`kafka://host:9092,host2:9092` (or the bare list) as librdkafka's `bootstrap.servers`."""
    servers = url.removeprefix(URL_SCHEME).strip("/")
    if not servers:
        raise ValueError(f"no Kafka bootstrap servers in {url!r}")
    return servers


def topic_for(message: BusMessage, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The topic of the message's event family."""
    return f"{prefix}.{message.family}"


def headers_for(message: BusMessage) -> list[tuple[str, str | bytes | None]]:
    """The CloudEvents structured-mode headers, plus the event id for deduplication."""
    return [("content-type", CONTENT_TYPE.encode()), ("ce_id", message.event_id.encode())]


def producer_config(
    servers: str, timeout: float, extra: Mapping[str, str | int | bool]
) -> dict[str, str | int | bool]:
    """librdkafka settings: `extra` (TLS, SASL, tuning) cannot weaken the delivery ones."""
    return {
        "bootstrap.servers": servers,
        **extra,
        "enable.idempotence": True,
        "acks": "all",
        # librdkafka gives up on the message when the relay stops waiting for it, so a
        # message reported unavailable is not also delivered later behind the relay's back.
        "message.timeout.ms": int(timeout * 1000),
    }


class KafkaBus:
    """An `EventBus` on Kafka through confluent-kafka (librdkafka)."""

    def __init__(
        self,
        servers: str,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        timeout: float = 10.0,
        config: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        """`servers`: a bootstrap list; `timeout`: seconds a message may wait for its ack;
        `config`: extra librdkafka settings (see `producer_config`)."""
        self._topic_prefix = topic_prefix
        self._timeout = timeout
        self._config = producer_config(servers, timeout, config or {})
        self._producer: Producer | None = None

    async def start(self) -> None:
        """Create the producer and check that the cluster answers; BusUnavailable if not."""
        producer = self._producer_now()
        try:
            await asyncio.to_thread(producer.list_topics, timeout=self._timeout)
        except KafkaException as error:
            raise BusUnavailable(f"Kafka cluster unreachable: {error}") from error

    async def publish(self, message: BusMessage) -> None:
        """Produce the message and wait for the brokers' acknowledgement (acks=all)."""
        producer = self._producer_now()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[KafkaError | None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _: Message) -> None:
            # Runs in the thread that serves callbacks (the flush below), not the loop's.
            loop.call_soon_threadsafe(_resolve, outcome, error)

        try:
            producer.produce(
                topic_for(message, self._topic_prefix),
                value=message.body,
                key=message.key.encode(),
                headers=headers_for(message),
                on_delivery=on_delivery,
            )
        except (KafkaException, BufferError) as error:
            raise BusUnavailable(f"Kafka producer refused the message: {error}") from error
        # A second longer than message.timeout.ms, so the failure callback has run by then.
        await asyncio.to_thread(producer.flush, self._timeout + 1.0)
        if not outcome.done():
            raise BusUnavailable(f"no Kafka acknowledgement within {self._timeout}s")
        failure = outcome.result()
        if failure is not None:
            if failure.fatal():
                # A fatal idempotence error poisons this producer; the next call makes another.
                self._producer = None
            raise BusUnavailable(f"Kafka did not take the message: {failure.str()}")

    async def close(self) -> None:
        """Deliver what is queued (up to the timeout), then drop the producer."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.flush, self._timeout)

    def _producer_now(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config, logger=_log)
        return self._producer


def _resolve(future: asyncio.Future[KafkaError | None], error: KafkaError | None) -> None:
    # The publish may have given up (cancelled) before librdkafka reported.
    if not future.done():
        future.set_result(error)
