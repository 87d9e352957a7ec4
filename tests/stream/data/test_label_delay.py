"""The delayed order of requests and labels (stream/data/label_delay.py)."""

from __future__ import annotations

import pytest

from stream.data.label_delay import delayed_order


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
