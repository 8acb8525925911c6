"""Choosing the bus from PLATFORM_EVENTS_BACKEND/URL, and the Kafka mapping's pure parts."""

from __future__ import annotations

import pytest

from infra.events.bus import BusMessage, EventBus
from infra.events.buses import make_bus
from infra.events.kafka import (
    KafkaBus,
    bootstrap_servers,
    headers_for,
    producer_config,
    topic_for,
)
from infra.events.nats import NatsBus

MESSAGE = BusMessage("ev-1", "tenants", "t_acme", "status-changed", b"{}")


def test_none_publishes_nothing() -> None:
    assert make_bus("none", "") is None


def test_nats_backend_builds_a_nats_bus() -> None:
    assert isinstance(make_bus("nats", "nats://127.0.0.1:4222"), NatsBus)


def test_kafka_backend_builds_a_kafka_bus() -> None:
    bus: EventBus | None = make_bus("kafka", "kafka://broker-1:9092,broker-2:9092")
    assert isinstance(bus, KafkaBus)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="rabbitmq"):
        make_bus("rabbitmq", "amqp://localhost")


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://broker:9092", "broker:9092"),
        ("kafka://a:9092,b:9092/", "a:9092,b:9092"),
        ("localhost:19092", "localhost:19092"),
    ],
)
def test_bootstrap_servers_drop_the_scheme(url: str, servers: str) -> None:
    assert bootstrap_servers(url) == servers


def test_a_url_without_servers_is_refused() -> None:
    with pytest.raises(ValueError, match="no Kafka bootstrap servers"):
        bootstrap_servers("kafka://")


def test_topic_per_family_under_the_prefix() -> None:
    assert topic_for(MESSAGE) == "platform.tenants"
    rollout = BusMessage("ev-2", "rollouts", "r_1", "rollout-started", b"{}")
    assert topic_for(rollout, "acme.platform") == "acme.platform.rollouts"


def test_structured_mode_headers_carry_the_event_id() -> None:
    assert dict(headers_for(MESSAGE)) == {
        "content-type": b"application/cloudevents+json",
        "ce_id": b"ev-1",
    }


def test_extra_settings_cannot_weaken_delivery() -> None:
    config = producer_config(
        "b:9092",
        2.5,
        {"acks": "0", "enable.idempotence": False, "security.protocol": "SASL_SSL"},
    )
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["message.timeout.ms"] == 2500
    assert config["security.protocol"] == "SASL_SSL"
    assert config["bootstrap.servers"] == "b:9092"
