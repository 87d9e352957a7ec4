"""A terminal progress bar for replays (only when stderr is a terminal)."""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from stream.engine.batch import Batch
from stream.engine.evaluation import Evaluation
from stream.engine.event_loop import EventLoop, Observer


class ProgressBar(Observer):
    """Shows samples learned, prequential and last anytime accuracy."""

    reads_hits = False

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=total, desc=label, unit="sample", disable=not enabled, leave=False)
        self.anytime: float | None = None

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray | None, learn_seconds: float
    ) -> None:
        self.bar.update(len(batch))

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        self.anytime = evaluation.accuracy
        postfix = {"preq": f"{loop.prequential.cumulative or 0:.3f}"}
        if self.anytime is not None:
            postfix["a(t)"] = f"{self.anytime:.3f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_finish(self, loop: EventLoop) -> None:
        self.bar.close()
