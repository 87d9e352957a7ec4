"""stream/observe/pacing.py: the schedule a rate limit keeps, on an injected clock."""

import numpy as np
import pytest
import torch

from stream.engine.batch import Batch
from stream.observe.pacing import Pacer, RateLimit
from tests.support.clock import Clock


class SleepingClock(Clock):
    """A clock that a sleep advances, recording each sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def batch(n: int) -> Batch:
    return Batch(x=torch.zeros(n, 1), y=torch.zeros(n, dtype=torch.long), level=torch.zeros(n))


def test_paces_to_the_rate_from_the_first_batch_on():
    clock = SleepingClock()
    pacer = Pacer(max_rate=2000, clock=clock, sleep=clock.sleep)
    started = clock.now
    for _ in range(10):
        pacer.on_batch(None, batch(50), np.zeros(50, bool), 0.0)
    # 500 samples at 2000/s: the clock starts at the first batch, which then waits 50/2000 s
    assert clock.sleeps == pytest.approx([0.025] * 10)
    assert clock.now - started == pytest.approx(500 / 2000)


def test_time_spent_elsewhere_counts_and_a_late_stream_does_not_sleep():
    clock = SleepingClock()
    limit = RateLimit(100, clock=clock, sleep=clock.sleep)
    limit.passed(10)  # due 0.1 s after the start
    clock.advance(0.5)  # the work between two steps took long: the stream is late
    limit.passed(10)  # due at 0.2 s, now is 0.6 s
    limit.passed(60)  # due at 0.8 s
    assert clock.sleeps == pytest.approx([0.1, 0.2])


def test_a_rate_so_slow_that_one_wait_would_overflow_sleeps_a_day_at_a_time():
    """1e-9 samples/s asked time.sleep for 6e10 s: OverflowError after the first batch (a
    publish left half published)."""
    clock = SleepingClock()
    limit = RateLimit(1e-9, clock=clock, sleep=clock.sleep)
    limit.passed(64)
    limit.passed(64)
    assert clock.sleeps == [86400.0, 86400.0]


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="max rate must be positive, got 0"):
        Pacer(0)
