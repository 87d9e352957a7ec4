"""Checking a micro-batch before any learner or metric sees it.

A batch with the wrong input shape, a NaN or inf, or a label or level outside the label space
is refused whole with one error that says what is wrong, before any state changes, so nothing
already learned is lost.
"""

from __future__ import annotations

import torch

from learners.base import Problem
from stream.batch import Batch


class BatchError(ValueError):
    """A micro-batch that does not fit the problem."""


def validate_batch(batch: Batch, problem: Problem) -> None:
    n = len(batch.y)
    if batch.x.shape[0] != n or batch.level.shape != (n,):
        raise BatchError(f"batch has {batch.x.shape[0]} inputs, {n} labels and {batch.level.shape[0]} levels")
    if tuple(batch.x.shape[1:]) != tuple(problem.input_shape):
        raise BatchError(
            f"input shape {tuple(batch.x.shape[1:])} does not match the problem's {tuple(problem.input_shape)}"
        )
    if batch.x.is_floating_point() and not _all_finite(batch.x):
        raise BatchError("input contains NaN or inf")
    if n == 0:
        return
    if int(batch.level.min()) < 0 or int(batch.level.max()) >= problem.num_levels:
        raise BatchError(f"level outside [0, {problem.num_levels})")
    for level, classes in enumerate(problem.num_classes):
        labels = batch.y if problem.num_levels == 1 else batch.y[batch.level == level]
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise BatchError(f"label outside [0, {classes}) at level {level}")


def _all_finite(x: torch.Tensor) -> bool:
    # A float64 sum of float32 (or narrower) values cannot overflow, so it is finite exactly
    # when every value is: one reduction instead of a boolean tensor the size of the batch.
    if x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return bool(torch.isfinite(x.sum(dtype=torch.float64)))
    return bool(torch.isfinite(x).all())
