"""Decoded messages to the event loop's micro-batches.

The samples of one poll are taken in order and cut into batches of at most ``batch_size``,
never spanning a task change, by the rule the recorded-stream source follows too
(:func:`stream.sources.cuts.batch_starts`), so a micro-batch message and a run of single-sample
JSON messages feed the learner the same way. A poll's last batch may be short: the cut is
per poll (stream/sources/cuts.py says when that matters). Inputs are gathered one
batch at a time, so a large poll is never copied whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from stream.engine.batch import Batch, Origins
from stream.sources.cuts import batch_starts
from stream.sources.wire import Samples


def micro_batches(samples: list[Samples], batch_size: int) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` samples; ``task`` is None where messages gave none."""
    if not samples:
        return
    y = np.concatenate([s.y for s in samples])
    level = np.concatenate([s.level for s in samples])
    task = np.concatenate([s.task for s in samples])
    ids = np.concatenate([s.ids for s in samples])
    inputs = [s.x for s in samples]
    starts = np.cumsum([0] + [len(s) for s in samples])
    for lo, hi in itertools.pairwise([*batch_starts(task, batch_size), len(y)]):
        yield Batch(
            x=torch.from_numpy(_gather(inputs, starts, lo, hi)),
            y=torch.from_numpy(y[lo:hi]),
            level=torch.from_numpy(level[lo:hi]),
            task=None if task[lo] < 0 else torch.from_numpy(task[lo:hi]),
            ids=torch.from_numpy(ids[lo:hi]),
            # the decoder refused every sample that does not fit the problem
            validated=True,
        )


def micro_batches_with_origins(
    samples: list[Samples], origins: Sequence[tuple[int, int]], batch_size: int
) -> Iterator[tuple[Batch, Origins]]:
    """:func:`micro_batches`, each with its samples' origins, given one ``(partition, offset)``
    per message of ``samples``."""
    counts = [len(s) for s in samples]
    partition_of = np.repeat([p for p, _ in origins], counts).astype(np.int64)
    offset_of = np.repeat([o for _, o in origins], counts).astype(np.int64)
    start = 0
    for batch in micro_batches(samples, batch_size):
        stop = start + len(batch)
        yield batch, (partition_of[start:stop], offset_of[start:stop])
        start = stop


def _gather(inputs: list[np.ndarray], starts: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of the inputs laid end to end, as one new (writable) array."""
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    last = int(np.searchsorted(starts, hi, side="left"))
    pieces = [
        inputs[i][max(lo - starts[i], 0) : min(hi, starts[i + 1]) - starts[i]]
        for i in range(first, last)
    ]
    return np.concatenate(pieces)
