"""The Kafka adapter against brokers speaking the Kafka protocol: librdkafka's mock cluster
here, a Redpanda container under the containers switch (tests/support/kafka.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest

from infra.events.bus import BusMessage, BusUnavailable
from infra.events.kafka import KafkaBus
from tests.support.kafka import kafka_cluster, read_topics
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def servers() -> Iterator[str]:
    with kafka_cluster() as bootstrap:
        yield bootstrap


def event(family: str, key: str, seq: int) -> BusMessage:
    event_id = str(uuid.uuid4())
    body = {"specversion": "1.0", "id": event_id, "subject": key, "data": {"seq": seq}}
    return BusMessage(event_id, family, key, "status-changed", json.dumps(body).encode())


async def test_events_land_on_their_family_topic_keyed_by_tenant_in_order(servers: str) -> None:
    # A prefix of its own: the topics are new, so everything read back was published here.
    prefix = f"test{uuid.uuid4().hex[:8]}.platform"
    bus = KafkaBus(servers, topic_prefix=prefix, timeout=10)
    tenants = ("t_alpha", "t_beta")
    sent = [event("tenants", tenants[seq % 2], seq) for seq in range(12)]
    sent.append(event("rollouts", "r_one", 12))
    await bus.start()
    try:
        for message in sent:
            await bus.publish(message)
    finally:
        await bus.close()

    received = read_topics(servers, [f"{prefix}.tenants", f"{prefix}.rollouts"], len(sent))

    by_id = {message.event_id: message for message in sent}
    partitions: dict[str, set[int | None]] = defaultdict(set)
    order: dict[str, list[int]] = defaultdict(list)
    for record in received:
        headers = dict(record.headers() or [])
        ce_id = headers["ce_id"]
        assert isinstance(ce_id, bytes)
        original = by_id[ce_id.decode()]
        assert headers["content-type"] == b"application/cloudevents+json"
        assert record.topic() == f"{prefix}.{original.family}"
        assert record.key() == original.key.encode()
        assert record.value() == original.body
        partitions[original.key].add(record.partition())
        order[original.key].append(json.loads(original.body)["data"]["seq"])
    assert sorted(order) == ["r_one", *tenants]
    for key, seqs in order.items():
        assert len(partitions[key]) == 1, f"{key} spread over partitions {partitions[key]}"
        assert seqs == sorted(seqs), f"{key} out of order: {seqs}"
    assert len(order["t_alpha"]) == len(order["t_beta"]) == 6


async def test_an_unreachable_cluster_is_unavailable_within_the_timeout() -> None:
    bus = KafkaBus(f"127.0.0.1:{free_port()}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        await bus.publish(event("tenants", "t_gamma", 0))
    assert time.monotonic() - started < 5
    with pytest.raises(BusUnavailable):
        await bus.start()
    await bus.close()
