"""stream/observe/log_budget.py: a burst of lines per event and window, the rest summed up."""

from __future__ import annotations

from structlog.testing import capture_logs

from stream.observe.log_budget import LogBudget
from tests.support.clock import Clock


def test_each_event_gets_its_burst_per_window_and_one_line_for_the_rest():
    clock = Clock()
    budget = LogBudget(burst=3, window=60.0, clock=clock)
    with capture_logs() as logs:
        assert [budget.allow("a") for _ in range(5)] == [True] * 3 + [False] * 2
        assert budget.allow("b")  # another event has a budget of its own
        clock.advance(60)
        assert budget.allow("a")  # a new window; the last one's suppressed lines summed up
        assert [budget.allow("a") for _ in range(3)] == [True, True, False]
        budget.flush()
    summaries = [
        (entry["suppressed_event"], entry["suppressed"], entry["logged"])
        for entry in logs
        if entry["event"] == "log_lines_suppressed"
    ]
    assert summaries == [("a", 2, 3), ("a", 1, 3)]


def test_nothing_suppressed_logs_no_summary():
    budget = LogBudget(burst=3)
    with capture_logs() as logs:
        assert budget.allow("a")
        budget.flush()
    assert logs == []
