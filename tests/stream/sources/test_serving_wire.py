"""Prediction requests and labels on the wire (stream/sources/serving_wire.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learners.base import Problem
from stream.sources.serving_wire import (
    FLAG_LABELS,
    FLAG_REQUEST,
    Labels,
    Requests,
    ServingDecoder,
    encode_label_json,
    encode_labels,
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


def test_binary_labels_round_trip_and_equal_their_json_labels():
    decoder = _decoder()
    ids, y, level = np.array([4, 2**40, 6]), np.array([1, 4, 0]), np.array([0, 1, 0])
    labels = decoder.decode(encode_labels(ids, y, level))
    assert isinstance(labels, Labels)
    assert (labels.ids.tolist(), labels.y.tolist(), labels.level.tolist()) == (
        ids.tolist(),
        y.tolist(),
        level.tolist(),
    )
    one = [
        decoder.decode(encode_label_json(int(i), int(c), int(lv)))
        for i, c, lv in zip(ids, y, level, strict=True)
    ]
    assert [(o.ids[0], o.y[0], o.level[0]) for o in one] == list(zip(ids, y, level, strict=True))
    assert decoder.decode(encode_labels(np.array([3]), np.array([1]))).level.tolist() == [0]
    # 13 bytes a label after a 16-byte header
    assert len(encode_labels(np.arange(64), np.zeros(64, int))) == 16 + 13 * 64


def _labels_with(offset: int, byte: int) -> bytes:
    message = bytearray(encode_labels(np.array([1, 2]), np.array([1, 0])))
    message[offset] = byte
    return bytes(message)


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
        # binary labels: bytes 5..7 of the header are the dtype code, flags and ndim
        (_labels_with(6, FLAG_LABELS), "missing_field", "binary labels need ids"),
        (_labels_with(6, FLAG_LABELS | 0x01 | 0x10), "wrong_type", "unknown flags"),
        (_labels_with(5, 1), "wrong_type", "carry no inputs"),
        (_labels_with(7, 1), "wrong_dimension", "carry no inputs"),
        (_labels_with(4, 9), "unsupported_version", "binary version 9"),
        (encode_labels(np.array([1, 2]), np.array([1, 0]))[:-1], "truncated", "2 labels need"),
        (encode_labels(np.array([1]), np.array([1])) + b"\0", "undecodable", "after the last"),
        (encode_labels(np.array([1]), np.array([7]), np.array([1])), "label_out_of_range", "7"),
        (encode_labels(np.array([1]), np.array([0]), np.array([2])), "unknown_level", "2"),
        (_labels_with(8 + 16 + 7, 0x80), "wrong_type", "non-negative"),  # id 2's sign bit
        (encode_labels(np.array([], int), np.array([], int)), "empty", "0 labels"),
        (
            encode_requests(
                np.zeros((1, 4), np.float32), np.array([1]), task=np.array([2**31 - 1])
            ),
            "out_of_range",
            "messages.max_task",
        ),
        # a JSON request's task was bounded only by int32: answered, then joined and learned
        (b'{"id": 1, "x": [1, 2, 3, 4], "task": 2147483647}', "out_of_range", "max_task"),
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
    with pytest.raises(InvalidMessage, match="configured for JSON"):
        _decoder("json").decode(encode_labels(np.array([1]), np.array([1])))
    with pytest.raises(InvalidMessage, match="magic"):
        _decoder("binary").decode(encode_request_json(np.zeros(4), id=1))


def test_a_daemon_without_serving_dead_letters_a_binary_request():
    binary = encode_requests(np.zeros((1, 2, 2), np.float32), np.array([1]))
    with pytest.raises(InvalidMessage, match="unknown flags"):
        Decoder(PROBLEM).decode(binary)
    with pytest.raises(InvalidMessage, match="unknown flags"):
        Decoder(PROBLEM).decode(encode_labels(np.array([1]), np.array([1])))


@pytest.mark.parametrize(
    ("ids", "y", "level"),
    [
        ([-1], [0], [0]),
        ([1], [-1], [0]),
        ([1], [2**31], [0]),
        ([1], [0], [256]),
        ([1, 2], [0], [0]),
    ],
)
def test_encode_labels_refuses_what_the_wire_cannot_carry(ids, y, level):
    with pytest.raises(ValueError):
        encode_labels(np.array(ids), np.array(y), np.array(level))


LABELS = encode_labels(np.array([1, 2, 3]), np.array([1, 4, 0]), np.array([0, 1, 1]))


@settings(max_examples=300, deadline=None)
@given(
    at=st.lists(st.integers(0, len(LABELS) - 1), min_size=1, max_size=3),
    byte=st.integers(0, 255),
    cut=st.integers(0, len(LABELS) + 2),
)
def test_a_mutated_binary_label_batch_is_decoded_in_range_or_refused(at, byte, cut):
    """Any byte changed, any length: labels inside the label space, or InvalidMessage."""
    message = bytearray(LABELS)
    for i in at:
        message[i] = byte
    value = bytes(message[:cut]) + b"\0" * max(0, cut - len(message))
    try:
        decoded = _decoder().decode(value)
    except InvalidMessage:
        return
    if isinstance(decoded, Labels):
        assert (decoded.ids >= 0).all() and len(decoded) >= 1
        assert ((decoded.level >= 0) & (decoded.level < 2)).all()
        assert (decoded.y >= 0).all()
        assert (decoded.y < np.array(PROBLEM.num_classes)[decoded.level]).all()
