"""Decoded messages to the event loop's micro-batches.

The samples of one poll are concatenated in order and cut into batches of at most
``batch_size``, never spanning a task change (as the recorded-stream source cuts them), so a
micro-batch message and a run of single-sample JSON messages feed the learner the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stream.batch import Batch
from stream.wire import Samples


def micro_batches(samples: list[Samples], batch_size: int) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` samples; ``task`` is None where messages gave none."""
    if not samples:
        return
    x = np.concatenate([s.x for s in samples])
    y = np.concatenate([s.y for s in samples])
    level = np.concatenate([s.level for s in samples])
    task = np.concatenate([s.task for s in samples])
    ids = np.concatenate([s.ids for s in samples])
    cuts = np.flatnonzero(task[1:] != task[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(y)]])
    x_all = torch.from_numpy(x)
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield Batch(
                x=x_all[lo:hi],
                y=torch.from_numpy(y[lo:hi]),
                level=torch.from_numpy(level[lo:hi]),
                task=None if task[lo] < 0 else torch.from_numpy(task[lo:hi]),
                ids=torch.from_numpy(ids[lo:hi]),
            )
