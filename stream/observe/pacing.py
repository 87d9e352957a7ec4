"""Pacing a replay to at most a given number of samples per second.

A recorded stream replays as fast as the learner allows; to watch a run live in Grafana, or to
rehearse a daemon's real arrival rate, the loop can be slowed to ``max_rate`` samples/s. The
observer sleeps after each micro-batch until the stream's schedule catches up with the clock.
"""

from __future__ import annotations

import time

import numpy as np

from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop, Observer


class Pacer(Observer):
    """Sleeps so that no more than ``max_rate`` samples per second go through the loop."""

    def __init__(self, max_rate: float) -> None:
        if max_rate <= 0:
            raise ValueError(f"max rate must be positive, got {max_rate}")
        self.max_rate = max_rate
        self.samples = 0
        self.started: float | None = None

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray, learn_seconds: float
    ) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        self.samples += len(batch)
        wait = self.started + self.samples / self.max_rate - now
        if wait > 0:
            time.sleep(wait)
