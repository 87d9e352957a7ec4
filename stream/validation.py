"""Checking a micro-batch before any learner or metric sees it.

A batch with the wrong input shape, a NaN or inf, or a label or level outside the label space
is refused whole with one error that says what is wrong, before any state changes, so nothing
already learned is lost. The checks run on numpy views of the CPU tensors: on micro-batches of
a few dozen samples numpy's per-call cost is several times lower than torch's, and this runs on
every batch.
"""

from __future__ import annotations

import numpy as np

from learners.base import Problem
from stream.batch import Batch


class BatchError(ValueError):
    """A micro-batch that does not fit the problem."""


def validate_batch(batch: Batch, problem: Problem) -> None:
    n = len(batch.y)
    if batch.x.shape[0] != n or batch.level.shape != (n,):
        raise BatchError(
            f"batch has {batch.x.shape[0]} inputs, {n} labels and {batch.level.shape[0]} levels"
        )
    if tuple(batch.x.shape[1:]) != tuple(problem.input_shape):
        raise BatchError(
            f"input shape {tuple(batch.x.shape[1:])} does not match the problem's {tuple(problem.input_shape)}"
        )
    if n == 0:
        return
    x = batch.x.detach().cpu().numpy()
    if x.dtype.kind == "f" and not _all_finite(x):
        raise BatchError("input contains NaN or inf")
    y, level = batch.y.cpu().numpy(), batch.level.cpu().numpy()
    if problem.num_levels == 1:
        if level.any():
            raise BatchError("level outside [0, 1)")
        if y.min() < 0 or y.max() >= problem.num_classes[0]:
            raise BatchError(f"label outside [0, {problem.num_classes[0]}) at level 0")
        return
    if level.min() < 0 or level.max() >= problem.num_levels:
        raise BatchError(f"level outside [0, {problem.num_levels})")
    limits = np.asarray(problem.num_classes)[level]
    if (y < 0).any() or (y >= limits).any():
        bad = int(np.flatnonzero((y < 0) | (y >= limits))[0])
        raise BatchError(
            f"label {int(y[bad])} outside [0, {int(limits[bad])}) at level {int(level[bad])}"
        )


def _all_finite(x: np.ndarray) -> bool:
    # A float64 sum of float32 (or narrower) values cannot overflow, so it is finite exactly
    # when every value is: one reduction instead of a boolean array the size of the batch.
    if x.itemsize <= 4:
        return bool(np.isfinite(x.sum(dtype=np.float64)))
    return bool(np.isfinite(x).all())
