"""Predictions read back from the topic after a crash: outside bytes, checked before use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.sinks.kafka_sink import open_sink
from stream.sinks.predictions import (
    prediction_json,
    published_prediction,
    read_published,
    request_key,
)


def published(**changes) -> tuple[bytes, bytes]:
    """A prediction as the daemon publishes it, with ``changes`` applied to its JSON."""
    message = prediction_json(7, [3], [np.arange(10.0)], ["label"], 12, 3)
    message.update(
        latency_seconds=0.001,
        served_at=1765000000.5,
        request={"topic": "samples", "partition": 1, "offset": 42, "index": 0},
    )
    message.update(changes)
    return request_key("samples", 1, 42, 0).encode(), json.dumps(message).encode()


def test_a_prediction_the_daemon_published_is_read_back_whole():
    key, value = published()
    assert published_prediction(key, value) == ("samples:1:42:0", json.loads(value))


@pytest.mark.parametrize(
    "key, value",
    [
        (None, published()[1]),
        (published()[0], None),
        (b"\xff\xfe", published()[1]),
        (published()[0], b"not json"),
        (published()[0], b"[" * 100_000 + b"]" * 100_000),
        (published()[0], b"[1, 2]"),
        published(request=None),
        published(request={"topic": "samples", "partition": 1, "offset": 42}),
        published(request={"topic": 5, "partition": 1, "offset": 42, "index": 0}),
        published(request={"topic": "samples", "partition": -1, "offset": 42, "index": 0}),
        published(request={"topic": "samples", "partition": 1, "offset": "42", "index": 0}),
        published(request={"topic": "samples", "partition": True, "offset": 42, "index": 0}),
        published(request={"topic": "samples", "partition": 1, "offset": 2**63, "index": 0}),
        published(request={"topic": "samples", "partition": 1, "offset": 43, "index": 0}),
        published(predicted="3"),
        published(predicted={"label": "3"}),
        published(predicted={"label": 3.5}),
        published(served_at=None),
        published(served_at="now"),
        published(served_at=True),
        published(served_at=float("nan")),
        published(served_at=10**400),  # valid JSON, beyond the float range
    ],
)
def test_a_message_the_daemon_cannot_have_published_is_passed_over(key, value):
    assert published_prediction(key, value) is None


def at(partition: int, offset: int) -> tuple[bytes, bytes]:
    """A prediction for request ``samples:partition:offset:0``."""
    request = {"topic": "samples", "partition": partition, "offset": offset, "index": 0}
    key = request_key("samples", partition, offset, 0).encode()
    return key, published(request=request)[1]


def test_a_reader_holds_only_the_predictions_it_keeps(kafka_broker):
    """A scaled-out rank reads the predictions of every rank since the checkpoint; it holds
    only those of its partitions and of requests it reads again, and no foreign message."""
    topic = "read-back-kept"
    sink = open_sink("confluent", kafka_broker.bootstrap)
    sink.ensure_topic(topic)
    messages = [at(p, o) for p in (0, 1) for o in range(8)] + [(b"k", b"not json")]
    for key, value in messages:
        sink.send(topic, value, key=key)
    sink.flush()
    sink.close()

    def mine(message: dict) -> bool:
        return message["request"]["partition"] == 1 and message["request"]["offset"] >= 5

    found = read_published(kafka_broker.bootstrap, topic, {}, keep=mine)
    assert sorted(found) == [f"samples:1:{o}:0" for o in (5, 6, 7)]
    assert len(read_published(kafka_broker.bootstrap, topic, {})) == 16
