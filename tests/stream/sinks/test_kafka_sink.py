"""Both Kafka clients behind the sink interface, and the dead-letter topic, on a real broker."""

from __future__ import annotations

import time

import pytest

from stream.sinks.dead_letter import TopicDeadLetters
from stream.sinks.kafka_sink import open_sink

CLIENTS = ["kafka-python", "confluent"]


def _read(bootstrap: str, topic: str, partitions: int, count: int) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list = []
    deadline = time.monotonic() + 30
    while len(messages) < count and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(100, 0.2) if m.error() is None]
    consumer.close()
    return messages


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_ensure_topic_creates_once_and_sends_arrive(kafka_broker, client):
    topic = f"sink-{client}"
    sink = open_sink(client, kafka_broker.bootstrap)
    assert sink.ensure_topic(topic, partitions=3) == 3
    assert sink.ensure_topic(topic, partitions=5) == 3  # the count applies at creation only
    for i in range(6):
        sink.send(topic, f"v{i}".encode(), partition=i % 3, key=f"k{i}".encode())
    sink.flush()
    sink.close()
    got = sorted(
        (m.partition(), m.key(), m.value()) for m in _read(kafka_broker.bootstrap, topic, 3, 6)
    )
    assert got == sorted((i % 3, f"k{i}".encode(), f"v{i}".encode()) for i in range(6))


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_dead_letters_reach_their_topic_with_reason_and_origin(kafka_broker, client):
    topic = f"dead-{client}"
    sink = open_sink(client, kafka_broker.bootstrap)
    sink.ensure_topic(topic)
    letters = TopicDeadLetters(lambda: sink, topic, max_value_bytes=3)
    letters.write("samples", 1, 42, b"abcdef", "undecodable", "not JSON")
    letters.sync()
    letters.close()
    [message] = _read(kafka_broker.bootstrap, topic, 1, 1)
    headers = {k: v.decode() for k, v in message.headers()}
    assert message.value() == b"abc" and message.key() == b"samples:1:42"
    assert headers["streamcl-reason"] == "undecodable" and headers["streamcl-offset"] == "42"
    assert headers["streamcl-partition"] == "1" and headers["streamcl-value-bytes"] == "6"
