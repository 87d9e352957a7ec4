"""Prediction requests and labels on the wire (stream/sources/serving_wire.py)."""

from __future__ import annotations

import numpy as np
import pytest

from learners.base import Problem
from stream.sources.serving_wire import (
    FLAG_REQUEST,
    Labels,
    Requests,
    ServingDecoder,
    encode_label_json,
    encode_request_json,
    encode_requests,
)
from stream.sources.wire import Decoder, InvalidMessage, Samples, encode_binary, encode_json

PROBLEM = Problem(input_shape=(2, 2), num_classes=(2, 5), level_names=("coarse", "fine"))


def _decoder(form: str = "auto") -> ServingDecoder:
    return ServingDecoder(Decoder(PROBLEM, form, max_bytes=4096))


def test_the_three_kinds_are_told_apart():
    decoder = _decoder()
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    request = decoder.decode(encode_request_json(x, id=9, task=2))
    assert isinstance(request, Requests)
    assert request.ids.tolist() == [9] and request.task.tolist() == [2]
    np.testing.assert_array_equal(request.x[0], x)
    label = decoder.decode(encode_label_json(9, 4, level=1))
    assert isinstance(label, Labels)
    assert (label.ids.tolist(), label.y.tolist(), label.level.tolist()) == ([9], [4], [1])
    assert isinstance(decoder.decode(encode_json(x, 1)), Samples)
    assert isinstance(decoder.decode(encode_binary(x[None], np.array([1]))), Samples)


def test_a_request_without_an_id_is_answered_but_joins_nothing():
    request = _decoder().decode(b'{"x": [1, 2, 3, 4]}')
    assert request.ids.tolist() == [-1] and request.task.tolist() == [-1]


def test_binary_requests_round_trip_floats_and_pixels():
    decoder = _decoder()
    x = np.random.default_rng(0).normal(size=(3, 2, 2)).astype(np.float32)
    request = decoder.decode(encode_requests(x, np.array([4, 5, 6]), task=np.array([1, 1, 2])))
    np.testing.assert_array_equal(request.x, x)
    assert request.ids.tolist() == [4, 5, 6] and request.task.tolist() == [1, 1, 2]
    pixels = np.array([[[0, 255], [51, 102]]], np.uint8)
    scaled = decoder.decode(encode_requests(pixels, np.array([1]))).x
    np.testing.assert_array_equal(scaled, pixels.astype(np.float32) / np.float32(255))


def _binary_without_ids() -> bytes:
    message = bytearray(encode_requests(np.zeros((1, 2, 2), np.float32), np.array([1])))
    message[6] = FLAG_REQUEST  # flags byte: ids dropped, the id bytes left as trailing garbage
    return bytes(message)


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b'{"y": 1}', "missing_field", "'id' of its request"),
        (b'{"id": 1, "y": 7, "level": 1}', "label_out_of_range", "label 7 outside [0, 5)"),
        (b'{"id": 1, "y": 1, "level": "medium"}', "unknown_level", "'medium'"),
        (b'{"id": -1, "y": 1}', "wrong_type", "'id' must be in"),
        (b'{"id": 1, "x": [1, 2, 3]}', "wrong_dimension", "expected (2, 2)"),
        (b'{"x": [1, 2, 3, NaN]}', "non_finite", "NaN"),
        (b'{"x": [1, 2, 3, "4"]}', "wrong_type", "other than numbers"),
        (b'{"id": 1}', "missing_field", "'x' is missing"),
        (_binary_without_ids(), "missing_field", "need ids"),
        (
            encode_requests(np.zeros((2, 2, 2), np.float32), np.array([1, 2]))[:-3],
            "truncated",
            "2 samples need",
        ),
        (
            encode_requests(np.zeros((1, 4), np.float32), np.array([-5])),
            "wrong_type",
            "non-negative",
        ),
        (
            encode_requests(np.full((1, 2, 2), np.inf, np.float32), np.array([1])),
            "non_finite",
            "NaN or inf",
        ),
        # a finite poison value: binary requests are bounded by messages.max_abs like samples
        (
            encode_requests(np.full((1, 2, 2), 3e38, np.float32), np.array([1])),
            "out_of_range",
            "messages.max_abs",
        ),
        (b'{"x": [1, 2, 3, 3e38]}', "out_of_range", "messages.max_abs"),
        (
            encode_requests(
                np.zeros((1, 4), np.float32), np.array([1]), task=np.array([2**31 - 1])
            ),
            "out_of_range",
            "messages.max_task",
        ),
    ],
)
def test_bad_requests_and_labels_are_refused_with_the_wire_reasons(value, reason, detail):
    with pytest.raises(InvalidMessage) as refused:
        _decoder().decode(value)
    assert refused.value.reason == reason and detail in refused.value.detail


def test_the_topic_format_applies_to_requests_too():
    binary = encode_requests(np.zeros((1, 2, 2), np.float32), np.array([1]))
    with pytest.raises(InvalidMessage, match="configured for JSON"):
        _decoder("json").decode(binary)
    with pytest.raises(InvalidMessage, match="magic"):
        _decoder("binary").decode(encode_request_json(np.zeros(4), id=1))


def test_a_daemon_without_serving_dead_letters_a_binary_request():
    binary = encode_requests(np.zeros((1, 2, 2), np.float32), np.array([1]))
    with pytest.raises(InvalidMessage, match="unknown flags"):
        Decoder(PROBLEM).decode(binary)
