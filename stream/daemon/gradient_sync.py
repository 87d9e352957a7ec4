"""Synchronous data-parallel steps for gradient learners (er, uer, mvp): all-reduced gradients.

Every rank holds the same parameters and optimizer state. Each optimizer step, wherever the
learner takes it, first averages the gradients over the ranks taking a step at that moment, so
every rank applies the same update and the parameters stay equal. The learner is untouched: the
averaging is an optimizer step pre-hook.

Inputs are uneven (a rank may have fewer micro-batches in a round, or none): a rank that has
finished its own steps for the round joins the others' steps with a zero-weight contribution
(it adds nothing to the gradient sum and is not counted in the mean) and applies the same
update, until no rank has a step left (:meth:`GradientSync.finish_round`). So step k of a round
is the mean, over the ranks that had a k-th step, of each rank's gradient on its own micro-batch
plus what it replayed from its own memory shard. With equal batch sizes on every rank that is one
step on the union of the ranks' batches (a K-times larger batch); it is not the model a single
process would train on the same stream in order, which no data-parallel method gives.

Each step costs two all-reduces: a one-number count of the ranks stepping, then the flattened
gradients with a has-gradient flag per parameter (a parameter no stepping rank touched keeps no
gradient, as it would in one process).
"""

from __future__ import annotations

from typing import Any

import torch

from stream.daemon.distributed import Collectives


class GradientSync:
    """Averages ``optimizer``'s gradients over the ranks at every step."""

    def __init__(self, optimizer: torch.optim.Optimizer, collectives: Collectives) -> None:
        self.optimizer = optimizer
        self.collectives = collectives
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self._draining = False
        self._stepping = 0
        self.steps = 0
        self._handle = optimizer.register_step_pre_hook(self._before_step)

    def close(self) -> None:
        self._handle.remove()

    def _count(self, stepping: bool) -> int:
        """How many ranks take a step now."""
        return int(self.collectives.sum([1.0 if stepping else 0.0])[0])

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        stepping = self._stepping if self._draining else self._count(True)
        contribute = not self._draining
        device = self.params[0].device
        parts, present = [], []
        for p in self.params:
            has = contribute and p.grad is not None
            present.append(1.0 if has else 0.0)
            parts.append(
                p.grad.detach().flatten() if has else torch.zeros(p.numel(), device=device)
            )  # type: ignore[union-attr]
        flat = torch.cat(
            [*(t.to(torch.float32) for t in parts), torch.tensor(present, device=device)]
        )
        self.collectives.sum_(flat)
        start = 0
        flags = flat[-len(self.params) :]
        for p, flag in zip(self.params, flags.tolist(), strict=True):
            size = p.numel()
            if flag > 0:
                p.grad = (flat[start : start + size] / stepping).view_as(p).to(p.dtype)
            else:
                p.grad = None
            start += size
        self.steps += 1

    def finish_round(self) -> None:
        """Join the other ranks' remaining steps with zero weight until none is left."""
        self._draining = True
        try:
            while True:
                stepping = self._count(False)
                if stepping == 0:
                    return
                self._stepping = stepping
                self.optimizer.step()
        finally:
            self._draining = False
