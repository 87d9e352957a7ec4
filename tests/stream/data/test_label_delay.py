"""The delayed order of requests and labels (stream/data/label_delay.py)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.data.label_delay import (
    LabelDelayError,
    check_label_delay,
    delayed_order,
    label_delays,
)


@pytest.mark.parametrize(("n", "delay"), [(0, 3), (1, 0), (5, 0), (5, 2), (5, 5), (5, 9)])
def test_each_label_comes_delay_requests_after_its_own(n, delay):
    events = list(delayed_order(n, delay))
    assert [i for kind, i in events if kind == "request"] == list(range(n))
    assert [i for kind, i in events if kind == "label"] == list(range(n))
    for position, (kind, i) in enumerate(events):
        if kind == "label":
            requests_before = sum(k == "request" for k, _ in events[:position])
            assert requests_before == min(i + delay + 1, n)


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        list(delayed_order(3, -1))


def test_drawn_delays_are_seeded_and_within_their_law():
    uniform = label_delays("uniform:3-7", 1000, seed=5)
    assert np.array_equal(uniform, label_delays("uniform:3-7", 1000, seed=5))
    assert not np.array_equal(uniform, label_delays("uniform:3-7", 1000, seed=6))
    assert uniform.min() == 3 and uniform.max() == 7
    exponential = label_delays("exponential:50", 20_000, seed=1)
    assert exponential.min() >= 0 and 48 < exponential.mean() < 51  # floor(Exp(50)): ~49.5
    assert label_delays(4, 3, seed=0).tolist() == [4, 4, 4]


def test_each_drawn_label_comes_after_its_due_request():
    delays = label_delays("uniform:0-6", 40, seed=2)
    events = list(delayed_order(40, delays))
    assert sorted(i for kind, i in events if kind == "label") == list(range(40))
    for position, (kind, i) in enumerate(events):
        if kind == "label":
            requests_before = sum(k == "request" for k, _ in events[:position])
            assert requests_before == min(i + int(delays[i]) + 1, 40)


@pytest.mark.parametrize("spec", ["-1", "uniform:5-2", "exponential:0", "normal:3", "1.5", ""])
def test_malformed_delays_are_refused_with_the_forms(spec):
    with pytest.raises(LabelDelayError, match="expected N, uniform:A-B or exponential:MEAN"):
        check_label_delay(spec)
