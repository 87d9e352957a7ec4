"""Pacing a stream to at most a given number of samples per second.

A recorded stream replays (or publishes) as fast as the machine allows; to watch a run live in
Grafana, or to rehearse a daemon's real arrival rate, it can be slowed to ``max_rate`` samples/s.
:class:`RateLimit` sleeps after each step until the stream's schedule catches up with the clock;
:class:`Pacer` is that limit as an event-loop observer (``streamcl replay --max-rate``), and
``streamcl publish --rate`` uses it between messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop, Observer

# the longest single sleep (a day): far below what time.sleep and thread waits take
MAX_SLEEP_SECONDS = 86400.0


class RateLimit:
    """No more than ``max_rate`` samples per second: the schedule starts at the first
    :meth:`passed`, and after ``n`` samples in all that call returns no earlier than
    ``n / max_rate`` seconds after it. ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        max_rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_rate <= 0:
            raise ValueError(f"max rate must be positive, got {max_rate}")
        self.max_rate = max_rate
        self.clock = clock
        self.sleep = sleep
        self.samples = 0
        self.started: float | None = None

    def passed(self, samples: int) -> None:
        """``samples`` more went through; sleep until the schedule allows them."""
        now = self.clock()
        if self.started is None:
            self.started = now
        self.samples += samples
        wait = self.started + self.samples / self.max_rate - now
        if wait > 0:
            # a rate such as 1e-9 samples/s asks for waits the OS cannot sleep (OverflowError
            # mid-run); the next call sleeps on, so pacing holds
            self.sleep(min(wait, MAX_SLEEP_SECONDS))


class Pacer(RateLimit, Observer):
    """Sleeps so that no more than ``max_rate`` samples per second go through the loop."""

    reads_hits = False

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray | None, learn_seconds: float
    ) -> None:
        self.passed(len(batch))
