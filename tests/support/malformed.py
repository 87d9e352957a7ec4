"""Malformed messages of every kind the daemon must refuse, with the reason it must give."""

from __future__ import annotations

import json

import numpy as np

from learners.base import Problem
from stream.sources.wire import encode_binary


def malformed_messages(problem: Problem, max_bytes: int) -> list[tuple[str, bytes]]:
    """``(expected reason, message)`` pairs, at least one per reason code."""
    d = problem.input_dim
    good_x = [0.5] * d
    binary = encode_binary(np.full((2, d), 0.5, np.float32), np.array([0, 1]))
    bad_version = bytearray(binary)
    bad_version[4] = 9
    bad_dtype = bytearray(binary)
    bad_dtype[5] = 7
    with_inf = np.full((2, d), 0.5, np.float32)
    with_inf[1, -1] = np.inf
    levels = problem.num_levels
    return [
        ("oversized", json.dumps({"x": good_x, "y": 0, "pad": "z" * max_bytes}).encode()),
        ("empty", b""),
        ("undecodable", b"\xff\xfe\x00 not json at all"),
        ("undecodable", b'{"x": [0.5, 0.5'),
        ("undecodable", binary + b"\0\0\0"),
        ("unsupported_version", bytes(bad_version)),
        ("truncated", binary[: len(binary) // 2]),
        ("wrong_type", b"[1, 2, 3]"),
        ("wrong_type", json.dumps({"x": good_x, "y": "3"}).encode()),
        ("wrong_type", json.dumps({"x": ["0.5"] * d, "y": 0}).encode()),
        ("wrong_type", bytes(bad_dtype)),
        ("missing_field", json.dumps({"x": good_x}).encode()),
        ("wrong_dimension", json.dumps({"x": [*good_x, 0.5], "y": 0}).encode()),
        ("wrong_dimension", encode_binary(np.zeros((1, d + 1), np.float32), np.array([0]))),
        # deeper than numpy's 32 dimensions, first or later in the list
        ("wrong_dimension", b'{"x": ' + b"[" * 33 + b"0.5" + b"]" * 33 + b', "y": 0}'),
        ("wrong_dimension", b'{"x": [0.5, ' + b"[" * 40 + b"0.5" + b"]" * 40 + b'], "y": 0}'),
        ("non_finite", json.dumps({"x": [float("nan"), *good_x[1:]], "y": 0}).encode()),
        ("non_finite", encode_binary(with_inf, np.array([0, 1]))),
        ("out_of_range", json.dumps({"x": [3e38, *good_x[1:]], "y": 0}).encode()),
        ("out_of_range", json.dumps({"x": good_x, "y": 0, "task": 2**31 - 1}).encode()),
        ("out_of_range", encode_binary(np.full((2, d), -3e38, np.float32), np.array([0, 1]))),
        ("label_out_of_range", json.dumps({"x": good_x, "y": problem.num_classes[0]}).encode()),
        ("label_out_of_range", json.dumps({"x": good_x, "y": -1}).encode()),
        ("unknown_level", json.dumps({"x": good_x, "y": 0, "level": levels}).encode()),
        ("unknown_level", json.dumps({"x": good_x, "y": 0, "level": "no-such-level"}).encode()),
    ]
