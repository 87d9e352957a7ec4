"""Predictions read back from the topic after a crash: outside bytes, checked before use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.sinks.predictions import prediction_json, published_prediction, request_key


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
        published(request={"topic": "samples", "partition": 1, "offset": 43, "index": 0}),
        published(predicted="3"),
        published(predicted={"label": "3"}),
        published(predicted={"label": 3.5}),
        published(served_at=None),
        published(served_at="now"),
        published(served_at=True),
        published(served_at=float("nan")),
    ],
)
def test_a_message_the_daemon_cannot_have_published_is_passed_over(key, value):
    assert published_prediction(key, value) is None
