"""A small labelled stream over Gaussian blobs, flat or with a two-level hierarchy, run through
the event loop in well under a second (for the tests of loop observers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from learners import registry
from learners.base import Problem
from stream.engine.batch import Batch
from stream.engine.evaluation import AnytimeEvaluator
from stream.engine.event_loop import EventLoop, LoopConfig, Observer

# Two coarse classes, each the parent of two fine ones.
PARENTS = (0, 0, 1, 1)


def problem(levels: int) -> Problem:
    if levels == 1:
        return Problem(input_shape=(4,), num_classes=(4,))
    return Problem(
        input_shape=(4,), num_classes=(2, 4), level_names=("coarse", "fine"), parents=(PARENTS,)
    )


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=generator)
    return torch.eye(4)[y] * 2 + 1.0 * torch.randn(n, 4, generator=generator), y


def batches(levels: int, samples_per_task: int = 40, batch_size: int = 8) -> list[Batch]:
    """Task 0 holds fine classes 0-1, task 1 classes 2-3; with a hierarchy, task 0's labels
    are coarse (level 0) and task 1's fine (level 1)."""
    out = []
    for task, classes in enumerate(((0, 1), (2, 3))):
        x, y = _blobs(4 * samples_per_task, seed=task)
        keep = (y == classes[0]) | (y == classes[1])
        x, y = x[keep][:samples_per_task], y[keep][:samples_per_task]
        level = torch.zeros_like(y)
        if levels == 2 and task == 0:
            y = torch.tensor(PARENTS)[y]
        elif levels == 2:
            level = torch.ones_like(y)
        for start in range(0, len(y), batch_size):
            rows = slice(start, start + batch_size)
            out.append(Batch(x[rows], y[rows], level[rows], torch.full_like(y[rows], task)))
    return out


def run(
    levels: int,
    observers: Sequence[Observer],
    eval_period: int = 16,
    learner: str = "nmc",
    options: dict[str, Any] | None = None,
) -> EventLoop:
    p = problem(levels)
    x_test, y_test = _blobs(60, seed=99)
    y_levels = (
        torch.stack([torch.tensor(PARENTS)[y_test], y_test], 1) if levels == 2 else y_test[:, None]
    )
    loop = EventLoop(
        registry.create(learner, p, options),
        p,
        LoopConfig(batch_size=8, eval_period=eval_period, prequential_windows=[20]),
        evaluator=AnytimeEvaluator(x_test, y_levels, p),
        num_tasks=2,
        observers=observers,
    )
    loop.run(batches(levels))
    return loop
