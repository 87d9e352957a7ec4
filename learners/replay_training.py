"""The training loop, checkpoint and device moves shared by the replay learners (ER, UER, MVP)."""

from __future__ import annotations

from typing import Any, Self

import torch
from torch import nn

from learners.base import Problem
from learners.levels import Levels, level_rows, sample_levels
from learners.state.learner_state import LearnerState
from learners.state.torch_state import (
    load_module_state,
    load_optimizer_state,
    module_state,
    optimizer_state,
)


class ReplayTraining:
    """The training loop, checkpoint and device moves shared by learners trained by gradient
    steps with a replay memory (ER and those built like it): a ``model`` holding every trained
    parameter, an ``optimizer``, per-level masks of the classes ``seen``, a ``memory`` and
    ``config.replay_batch_size``. ``learn`` is experience replay: mark the batch's classes seen,
    then each iteration take one step (``_step``) on the batch joined by as many memory samples,
    and finally offer the batch to the memory. Mixed in before :class:`~learners.base.Learner`;
    learners with more state extend these methods and call them."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    seen: list[torch.Tensor]
    memory: Any
    config: Any
    problem: Problem
    device: torch.device

    def _step(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> None:
        raise NotImplementedError

    def _begin(
        self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Start a ``learn``: the batch on the device, its classes marked seen, the model in
        training mode; returns the batch (with its per-sample levels) and how many memory
        samples to replay per step."""
        x = x.to(self.device, torch.float32)
        y = y.to(self.device)
        level = sample_levels(level, y)
        for lvl, rows in level_rows(level, self.problem.num_levels):
            self.seen[lvl][y[rows]] = True
        replay = len(y) if self.config.replay_batch_size is None else self.config.replay_batch_size
        self.model.train()
        return x, y, level, replay

    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        x, y, level, replay = self._begin(x, y, level)
        for _ in range(iterations):
            bx, by, blevel = x, y, level
            if replay > 0 and len(self.memory) > 0:
                mx, my, mlevel = self.memory.sample(replay, query=x)
                bx = torch.cat([x, mx.to(self.device, torch.float32)])
                by = torch.cat([y, my.to(self.device)])
                blevel = torch.cat([level, mlevel.to(self.device)])
            self._step(bx, by, blevel)
        self.memory.add(x, y, level)

    def state_dict(self) -> LearnerState:
        state = LearnerState({f"seen.{lvl}": seen.cpu() for lvl, seen in enumerate(self.seen)})
        state.put("model", module_state(self.model))
        state.put("optimizer", optimizer_state(self.optimizer))
        state.put("memory", self.memory.state_dict())
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        load_module_state(self.model, state.part("model"))
        load_optimizer_state(self.optimizer, state.part("optimizer"))
        self.seen = [state.tensors[f"seen.{lvl}"].to(self.device) for lvl in range(len(self.seen))]
        self.memory.load_state_dict(state.part("memory"))

    def to(self, device: torch.device | str) -> Self:
        super().to(device)  # type: ignore[misc]  # the Learner this is mixed into
        self.model.to(self.device)
        self.seen = [s.to(self.device) for s in self.seen]
        return self
