"""The optional per-sample path: learners that test and train one sample at a time.

The engine's default micro-batch step predicts a whole batch, then learns it. A learner that
updates sample by sample anyway (a river model's ``learn_one``) can instead predict each sample
just before learning it, inside the batch, which is exactly river's test-then-train
(``evaluate.progressive_val_score``) at any batch size, and converts each input once instead of
twice. The engine uses :meth:`SequentialLearner.test_then_train` when a learner has it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class SequentialLearner(ABC):
    """Mixin of learners that can predict each sample of a batch just before learning it."""

    @abstractmethod
    def test_then_train(
        self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor, iterations: int = 1
    ) -> torch.Tensor:
        """For each sample in order, predict its class at its level, then learn it.

        Returns ``[B]`` class ids (int64): sample ``i``'s prediction, made after samples
        ``< i`` were learned and before sample ``i`` was, equal to the argmax of
        ``predict`` at that moment; ``-1`` where the learner could not predict (every class
        scored ``-inf``). Learning must equal ``learn(x, y, level, iterations)``.
        """
