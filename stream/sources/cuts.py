"""Where a run of stream events is cut into micro-batches: the one rule both sources follow.

As in the official i-Blurry / Si-Blurry loops, which run one data loader per task, a micro-batch
never spans a task change and the last micro-batch of a task may be short; the next task starts
a fresh batch. The recorded-stream source (``file_source.py``) and the Kafka batcher
(``batcher.py``) cut with :func:`batch_starts`, so a stream replayed from a file and the same
stream published to Kafka to one partition feed the learner the same batches: the daemon
carries a poll's short last batch to the next poll (:class:`~stream.sources.batcher.
PendingSamples`) and learns it early only when a poll comes back empty at the end of what the
broker has (an idle topic). Several partitions are interleaved as the polls return them.
"""

from __future__ import annotations

import itertools

import numpy as np


def batch_starts(task: np.ndarray, batch_size: int, start: int = 0) -> list[int]:
    """The first event of each micro-batch of the events ``start:`` with task labels ``task``:
    batches of at most ``batch_size`` events, cut at every task change. The batches tile the
    events, so each ends where the next starts (the last at ``len(task)``)."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    changes = np.flatnonzero(task[1:] != task[:-1]) + 1
    bounds = [0, *changes.tolist(), len(task)]
    return [
        lo
        for task_start, task_end in itertools.pairwise(bounds)
        for lo in range(max(task_start, start), task_end, batch_size)
    ]
