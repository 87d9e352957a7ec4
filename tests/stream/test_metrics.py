"""Prequential accuracy (stream/metrics.py) equals river's Accuracy and Rolling exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

from stream.metrics import PrequentialAccuracy


@settings(max_examples=200, deadline=None)
@given(
    hits=st.lists(st.booleans(), min_size=1, max_size=400),
    cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=50),
    windows=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=4, unique=True),
)
def test_equals_river_accuracy_and_rolling_after_every_batch(hits, cuts, windows):
    ours = PrequentialAccuracy(windows)
    accuracy = metrics.Accuracy()
    rolling = {w: utils.Rolling(metrics.Accuracy, window_size=w) for w in windows}
    position, batch = 0, 0
    while position < len(hits):
        size = cuts[batch % len(cuts)]
        chunk = hits[position : position + size]
        ours.update(np.asarray(chunk))
        for hit in chunk:
            # A hit is a prediction equal to the label; river sees the same pairs.
            accuracy.update(True, hit)
            for metric in rolling.values():
                metric.update(True, hit)
        assert ours.cumulative == accuracy.get()
        for w, metric in rolling.items():
            assert ours.rolling_at(w) == metric.get(), f"window {w} after {position + size}"
        position += size
        batch += 1


def test_state_round_trip_continues_identically():
    a = PrequentialAccuracy((3, 10))
    a.update(np.array([1, 0, 1, 1, 0, 0, 1], dtype=bool))
    b = PrequentialAccuracy()
    b.load_state_dict(a.state_dict())
    for chunk in ([1, 1], [0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1]):
        a.update(np.array(chunk, dtype=bool))
        b.update(np.array(chunk, dtype=bool))
        assert a.values() == b.values()


def test_no_prediction_yet_is_none_and_unknown_windows_are_refused():
    p = PrequentialAccuracy((5,))
    assert p.values() == {"cumulative": None, "5": None}
    with pytest.raises(KeyError):
        p.rolling_at(6)
    with pytest.raises(ValueError):
        PrequentialAccuracy((5, 5))
