import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics as river_metrics
from river import utils

from stream.engine import metrics


def test_accuracy_summaries_by_hand():
    anytime = [0.2, 0.4, 0.9, None]
    task_end = [0.5, 0.7, 0.6]
    assert metrics.A_auc(anytime) == pytest.approx(0.5)
    assert metrics.A_avg(task_end) == pytest.approx(0.6)
    assert metrics.A_last(task_end) == 0.6
    assert metrics.A_auc([]) is None and metrics.A_last([]) is None


def test_f_last_by_hand_as_in_the_official_code():
    # rows: task ends; columns: classes. Class 2 was never above 0 before the end: excluded.
    acc = np.array(
        [
            [0.9, 0.0, 0.0],
            [0.6, 0.8, 0.0],
            [0.3, 0.7, 0.5],
        ]
    )
    # class 0: max(0.9, 0.6) - 0.3 = 0.6; class 1: max(0.0, 0.8) - 0.7 = 0.1
    assert metrics.F_last(acc) == pytest.approx(0.35)


def test_f_last_can_be_negative_and_needs_two_task_ends():
    assert metrics.F_last(np.array([[0.5], [0.9]])) == pytest.approx(-0.4)
    assert metrics.F_last(np.array([[0.5, 0.2]])) is None
    assert metrics.F_last(np.zeros((3, 2))) is None


def test_running_forgetting_by_hand():
    assert metrics.running_forgetting(
        np.array([0.8, 0.0, 0.5]), np.array([0.4, 0.0, 0.5])
    ) == pytest.approx(0.2)
    assert metrics.running_forgetting(np.zeros(2), np.zeros(2)) is None


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(1, 30),
    batches=st.lists(st.lists(st.booleans(), min_size=1, max_size=40), min_size=1, max_size=20),
)
def test_prequential_ring_equals_a_naive_window(window, batches):
    acc = metrics.PrequentialAccuracy(window)
    history: list[bool] = []
    for batch in batches:
        acc.update(np.array(batch))
        history += batch
        assert acc.cumulative == pytest.approx(sum(history) / len(history))
        recent = history[-window:]
        assert acc.rolling == pytest.approx(sum(recent) / len(recent))
    restored = metrics.PrequentialAccuracy(1)
    restored.load_state_dict(acc.state_dict())
    restored.update(np.array([True, False]))
    acc.update(np.array([True, False]))
    assert restored.rolling == acc.rolling and restored.cumulative == acc.cumulative


def test_prequential_before_any_sample_is_none():
    acc = metrics.PrequentialAccuracy(10)
    assert acc.cumulative is None and acc.rolling is None
    with pytest.raises(ValueError):
        metrics.PrequentialAccuracy(0)


@settings(max_examples=200, deadline=None)
@given(
    hits=st.lists(st.booleans(), min_size=1, max_size=400),
    cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=50),
    windows=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=4, unique=True),
)
def test_prequential_equals_river_accuracy_and_rolling_after_every_batch(hits, cuts, windows):
    ours = metrics.PrequentialAccuracy(windows)
    accuracy = river_metrics.Accuracy()
    rolling = {w: utils.Rolling(river_metrics.Accuracy, window_size=w) for w in windows}
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


def test_prequential_windows_state_round_trip_continues_identically():
    a = metrics.PrequentialAccuracy((3, 10))
    a.update(np.array([1, 0, 1, 1, 0, 0, 1], dtype=bool))
    b = metrics.PrequentialAccuracy()
    b.load_state_dict(a.state_dict())
    for chunk in ([1, 1], [0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1]):
        a.update(np.array(chunk, dtype=bool))
        b.update(np.array(chunk, dtype=bool))
        assert a.values() == b.values()


def test_prequential_values_by_window_and_unknown_windows_refused():
    p = metrics.PrequentialAccuracy((5, 2))
    assert p.values() == {"cumulative": None, "5": None, "2": None}
    p.update(np.array([True, False, True]))
    assert p.values() == {"cumulative": 2 / 3, "5": 2 / 3, "2": 0.5}
    with pytest.raises(KeyError):
        p.rolling_at(6)
    with pytest.raises(ValueError):
        metrics.PrequentialAccuracy((5, 5))


@settings(max_examples=60, deadline=None)
@given(
    windows=st.lists(st.integers(1, 30), min_size=1, max_size=3, unique=True),
    hits=st.lists(st.booleans(), min_size=1, max_size=120),
    cuts=st.lists(st.integers(0, 120), max_size=8),
)
def test_prequential_state_does_not_depend_on_how_the_hits_are_cut(windows, hits, cuts):
    """The event loop may feed a run of batches in one call (stream/engine/
    deferred_prequential.py): the state, checkpoints included, equals per-sample updates."""
    one_by_one = metrics.PrequentialAccuracy(windows)
    for hit in hits:
        one_by_one.update(np.array([hit]))
    chunked = metrics.PrequentialAccuracy(windows)
    bounds = [0, *sorted(c for c in cuts if c < len(hits)), len(hits)]
    for lo, hi in itertools.pairwise(bounds):
        chunked.update(np.array(hits[lo:hi], dtype=bool))
    assert chunked.state_dict() == one_by_one.state_dict()
    assert chunked.values() == one_by_one.values()
