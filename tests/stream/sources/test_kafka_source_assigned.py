"""Manual partition assignment (a scaled-out daemon's ranks), both clients, a real broker: the
source reads exactly the partitions it chose, from where the daemon says, and joins no
rebalance."""

from __future__ import annotations

import time

import pytest

from stream.daemon.config import KafkaConfig
from stream.sinks.kafka_sink import open_sink
from stream.sources.kafka_source import SourceError, open_source

CLIENTS = ["kafka-python", "confluent"]


def config(bootstrap: str, topic: str, client: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap=bootstrap, topic=topic, client=client, group=f"assigned-{client}",
        request_timeout_ms=5000,
    )  # fmt: skip


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_a_source_reads_only_the_partitions_it_chose(kafka_broker, client):
    topic = f"assigned-{client}"
    sink = open_sink("confluent", kafka_broker.bootstrap)
    assert sink.ensure_topic(topic, partitions=3) == 3
    for i in range(12):
        sink.send(topic, f"m{i}".encode(), partition=i % 3)
        sink.flush()
    sink.close()
    offered: list[list[int]] = []
    asked: list[list[int]] = []

    def choose(partitions: list[int]) -> list[int]:
        offered.append(partitions)
        return [p for p in partitions if p != 1]

    def on_assign(partitions: list[int]) -> dict[int, int]:
        asked.append(sorted(partitions))
        return {2: 3}  # partition 0 is unknown: it starts from the earliest

    source = open_source(
        config(kafka_broker.bootstrap, topic, client), on_assign, lambda problem: None, choose
    )
    try:
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 5 and time.monotonic() < deadline:
            records += source.poll(100, 0.2)
        assert offered == [[0, 1, 2]] and asked == [[0, 2]]
        assert source.assignment() == [0, 2]
        assert sorted((r.partition, r.offset, r.value) for r in records) == [
            (0, 0, b"m0"), (0, 1, b"m3"), (0, 2, b"m6"), (0, 3, b"m9"), (2, 3, b"m11"),
        ]  # fmt: skip
    finally:
        source.close()


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_a_topic_that_does_not_exist_yet_is_a_source_error(kafka_broker, client):
    with pytest.raises(SourceError, match="has no partitions"):
        open_source(
            config(kafka_broker.bootstrap, f"absent-{client}", client),
            lambda partitions: {},
            lambda problem: None,
            lambda partitions: partitions,
        )
