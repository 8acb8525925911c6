"""A Kafka cluster for the adapter's tests, and reading a topic back.

By default the cluster is librdkafka's own mock cluster (`test.mock.num.brokers`): real brokers
speaking the Kafka protocol on loopback ports, living as long as the client that hosts them.
Under the containers switch (devstack.containers) `PLATFORM_TEST_KAFKA_BOOTSTRAP` names a real
broker (Redpanda) instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

BOOTSTRAP_ENV = "PLATFORM_TEST_KAFKA_BOOTSTRAP"


@contextmanager
def kafka_cluster(brokers: int = 3) -> Iterator[str]:
    """Bootstrap servers of a cluster: the external one if named, else a mock cluster."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    host = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
    try:
        metadata = host.list_topics(timeout=10)
        yield ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    finally:
        host.flush(0)


def read_topics(
    servers: str, topics: list[str], count: int, timeout: float = 15.0
) -> list[Message]:
    """The first `count` messages of `topics` from the beginning, in each partition's order."""
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "tests", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(timeout=timeout)
        consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in topics
                for partition in metadata.topics[topic].partitions
            ]
        )
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(messages)} of {count} messages within {timeout}s")
            for message in consumer.consume(count - len(messages), timeout=0.2):
                if message.error() is not None:
                    raise AssertionError(f"consumer error: {message.error()}")
                messages.append(message)
        return messages
    finally:
        consumer.close()
