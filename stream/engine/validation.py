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
from stream.data.finite import all_finite
from stream.engine.batch import Batch


class BatchError(ValueError):
    """A micro-batch that does not fit the problem."""


def outside_label_space(
    labels: np.ndarray, levels: np.ndarray, num_classes: np.ndarray
) -> tuple[int, str, str] | None:
    """The first sample whose level or label lies outside the label space (``num_classes``
    per level): its index, ``"level"`` or ``"label"``, and what is wrong; None when all fit.
    Shared by the batch check, the recorded-stream check and the wire decoder."""
    if len(labels) == 0:
        return None
    if len(num_classes) == 1:  # the usual case, in as few numpy calls as possible
        if levels.any():
            i = int(np.flatnonzero(levels)[0])
            return i, "level", f"level {int(levels[i])} outside [0, 1)"
        limit = int(num_classes[0])
        if labels.min() >= 0 and labels.max() < limit:
            return None
        i = int(np.flatnonzero((labels < 0) | (labels >= limit))[0])
        return i, "label", f"label {int(labels[i])} outside [0, {limit}) at level 0"
    if levels.min() < 0 or levels.max() >= len(num_classes):
        i = int(np.flatnonzero((levels < 0) | (levels >= len(num_classes)))[0])
        return i, "level", f"level {int(levels[i])} outside [0, {len(num_classes)})"
    limits = num_classes[levels]
    wrong = (labels < 0) | (labels >= limits)
    if not wrong.any():
        return None
    i = int(np.flatnonzero(wrong)[0])
    return (
        i,
        "label",
        f"label {int(labels[i])} outside [0, {int(limits[i])}) at level {int(levels[i])}",
    )


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
    bad = outside_label_space(y.numpy(), level.numpy(), np.asarray(problem.num_classes))
    if bad is not None:
        raise BatchError(bad[2])


def _finite(x: torch.Tensor) -> bool:
    """Whether every input value is finite (numpy on CPU float32/64: a fraction of torch's
    per-call cost on a micro-batch; other float types, e.g. bfloat16, through torch)."""
    if x.dtype not in (torch.float32, torch.float64):
        return bool(torch.isfinite(x).all())
    return all_finite(x.numpy())
