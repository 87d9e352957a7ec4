"""What the analytic-learner tests compare against: the joint ridge solution computed directly,
and the digits training split in three stream orders fed the way the event loop feeds it."""

from __future__ import annotations

import numpy as np
import torch

from learners.base import Learner, Problem
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.schedules import make_schedule

GAMMA = 0.1


def joint_ridge(H: torch.Tensor, Y: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """W = (HᵀH + γI)⁻¹ HᵀY computed directly on all the rows, float64."""
    A = H.T @ H + gamma * torch.eye(H.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, H.T @ Y)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class Digits:
    """The digits training split in class-sorted, Si-Blurry (seed 1) and random order."""

    def __init__(self) -> None:
        dataset = load_dataset("digits")
        self.problem = dataset.problem()
        self.x = as_float_tensor(dataset.X_train)
        self.y = torch.from_numpy(dataset.y_train)
        self.x_test = as_float_tensor(dataset.X_test)
        self.y_test = torch.from_numpy(dataset.y_test)
        schedule, _ = make_schedule("si-blurry", dataset, {}, seed=1)
        self.orders = {
            "class-sorted": torch.from_numpy(np.argsort(dataset.y_train, kind="stable")),
            "si-blurry": torch.from_numpy(schedule.rows),
            "random": torch.randperm(len(self.y), generator=torch.Generator().manual_seed(0)),
        }

    def two_levels(self) -> tuple[Problem, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A hierarchy over digits (level 0: digit // 5, level 1: the digit), each sample of the
        random order labelled at one level drawn at random: (problem, x, y, level)."""
        problem = Problem(
            input_shape=self.problem.input_shape,
            num_classes=(2, 10),
            level_names=("half", "digit"),
            parents=(tuple(d // 5 for d in range(10)),),
        )
        rows = self.orders["random"]
        x, fine = self.x[rows], self.y[rows]
        level = torch.randint(0, 2, (len(fine),), generator=torch.Generator().manual_seed(3))
        return problem, x, torch.where(level == 0, fine // 5, fine), level


def feed(
    learner: Learner,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    prequential: bool,
    level: torch.Tensor | None = None,
) -> None:
    """Stream ``x, y`` in batches; ``prequential``: predict each batch first, as the loop does."""
    level = torch.zeros_like(y) if level is None else level
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        if prequential:
            learner.predict(x[rows], 0)
        learner.learn(x[rows], y[rows], level[rows], iterations=1)
