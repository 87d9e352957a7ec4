"""Both Kafka clients behind the source interface, against a real broker: same behaviour."""

from __future__ import annotations

import socket
import time

import pytest

from stream.daemon.config import KafkaConfig
from stream.sinks.kafka_sink import open_sink
from stream.sources.kafka_source import SourceError, open_source

CLIENTS = ["kafka-python", "confluent"]
# Short group timeouts: tansu waits a full rebalance timeout before it assigns partitions.
FAST_GROUP = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 2000,
}


def kafka_config(bootstrap: str, topic: str, client: str, group: str, **extra) -> KafkaConfig:
    settings = {"request_timeout_ms": 5000, **FAST_GROUP, **extra}
    return KafkaConfig(bootstrap=bootstrap, topic=topic, client=client, group=group, **settings)


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_assignment_seeks_where_the_daemon_says_and_polls_in_order(kafka_broker, client):
    topic = f"source-{client}"
    sink = open_sink("confluent", kafka_broker.bootstrap)
    assert sink.ensure_topic(topic, partitions=2) == 2
    for i in range(10):
        sink.send(topic, f"m{i}".encode(), partition=i % 2)
        sink.flush()  # one record per batch: tansu then reports exact end offsets
    sink.close()
    asked: list[list[int]] = []
    errors: list[str] = []

    def on_assign(partitions: list[int]) -> dict[int, int]:
        asked.append(sorted(partitions))
        return {0: 3}  # partition 1 is unknown to the daemon: it starts from the earliest

    source = open_source(
        kafka_config(kafka_broker.bootstrap, topic, client, f"g-{client}"), on_assign, errors.append
    )
    try:
        records = []
        deadline = time.monotonic() + 60
        while len(records) < 7 and time.monotonic() < deadline:
            records += source.poll(100, 0.2)
        assert asked == [[0, 1]]
        by_partition = {
            p: [(r.offset, r.value) for r in records if r.partition == p] for p in (0, 1)
        }
        assert by_partition[0] == [(3, b"m6"), (4, b"m8")]
        assert by_partition[1] == [(o, f"m{2 * o + 1}".encode()) for o in range(5)]
        assert source.assignment() == [0, 1]
        assert source.end_offsets([0, 1], 5.0) == {0: 5, 1: 5}
        source.commit({0: 5, 1: 5})
    finally:
        source.close()


@pytest.mark.kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_a_topic_not_made_yet_has_end_offset_0_not_an_unreachable_broker(kafka_broker, client):
    """confluent's watermark query fails with 'unknown partition' for a topic that does not
    exist; the daemon's lag probe reported that as an unreachable broker."""
    config = kafka_config(kafka_broker.bootstrap, f"not-made-{client}", client, f"n-{client}")
    source = open_source(config, lambda partitions: {}, lambda problem: None)
    try:
        assert source.poll(10, 0.2) == []
        assert source.end_offsets([0], 5.0) == {0: 0}
    finally:
        source.close()


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unreachable_broker_is_a_source_error_not_a_crash(client):
    config = kafka_config(_closed_port(), "t", client, "g", request_timeout_ms=1500)
    with pytest.raises(SourceError):
        source = open_source(config, lambda partitions: {}, lambda problem: None)
        try:
            assert source.poll(10, 0.2) == []
            source.end_offsets([0], 1.0)
        finally:
            source.close()


def test_a_client_error_names_its_type_once():
    """kafka-python's errors begin with their type already: 'failed: SinkError: host:9:
    KafkaTimeoutError: KafkaTimeoutError: Unable to bootstrap ...' named it twice."""
    import kafka.errors

    from stream.sources.kafka_source import client_error

    timeout = kafka.errors.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9']")
    assert client_error(timeout) == (
        "KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:9'] "
        "(is a Kafka broker listening at that address, and reachable from here?)"
    )
    assert client_error(RuntimeError("closed")) == "RuntimeError: closed"
