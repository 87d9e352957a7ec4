"""Checking a micro-batch before any learner or metric sees it.

A batch with the wrong input shape, a NaN or inf, or a label or level outside the label space
is refused whole with one error that says what is wrong, before any state changes, so nothing
already learned is lost. The checks run on numpy views of the CPU tensors: on micro-batches of
a few dozen samples numpy's per-call cost is several times lower than torch's, and this runs on
every batch.
"""

from __future__ import annotations

import numpy as np
import torch

from learners.base import Problem
from stream.batch import Batch


class BatchError(ValueError):
    """A micro-batch that does not fit the problem."""


def validate_batch(batch: Batch, problem: Problem) -> None:
    x, y, level = batch.x, batch.y, batch.level
    n = y.shape[0]
    if y.ndim != 1 or x.shape[0] != n or level.shape != (n,):
        raise BatchError(f"batch has {x.shape[0]} inputs, {n} labels and {level.shape[0]} levels")
    if x.shape[1:] != problem.input_shape:
        raise BatchError(
            f"input shape {tuple(x.shape[1:])} does not match the problem's {tuple(problem.input_shape)}"
        )
    if n == 0:
        return
    if x.is_floating_point() and not _finite(x):
        raise BatchError("input contains NaN or inf")
    labels, levels = y.numpy(), level.numpy()
    if problem.num_levels == 1:
        if levels.any():
            raise BatchError("level outside [0, 1)")
        if labels.min() < 0 or labels.max() >= problem.num_classes[0]:
            raise BatchError(f"label outside [0, {problem.num_classes[0]}) at level 0")
        return
    if levels.min() < 0 or levels.max() >= problem.num_levels:
        raise BatchError(f"level outside [0, {problem.num_levels})")
    limits = np.asarray(problem.num_classes)[levels]
    if (labels < 0).any() or (labels >= limits).any():
        bad = int(np.flatnonzero((labels < 0) | (labels >= limits))[0])
        raise BatchError(
            f"label {int(labels[bad])} outside [0, {int(limits[bad])}) at level {int(levels[bad])}"
        )


def _finite(x: torch.Tensor) -> bool:
    """Whether every input value is finite (numpy on CPU float32/64: a fraction of torch's
    per-call cost on a micro-batch; other float types, e.g. bfloat16, through torch)."""
    if x.dtype not in (torch.float32, torch.float64):
        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x.numpy()).all())
