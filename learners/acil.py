"""G-ACIL: the analytic class-incremental learner as a streaming ridge head.

ACIL (Zhuang et al., NeurIPS 2022) and G-ACIL (Zhuang et al., arXiv 2403.15706): a frozen
backbone, a fixed random ReLU buffer layer, and a ridge head W = (HᵀH + γI)⁻¹ HᵀY fitted on every
sample seen (:mod:`learners.analytic`). Because the head keeps the sufficient statistics of all
the data, the streaming solution equals the joint (all data at once) ridge solution whatever the
order of the stream or the size of its batches, and classes that are new and classes already
known can share a batch without any special case (the generalised setting of G-ACIL). There are
no exemplars and no gradients.

Deviations from the official code (ZHUANGHP/Analytic-continual-learning), on purpose:
- the head keeps G = HᵀH, Q = HᵀY (``solver="auto"``, the default, or ``"lazy"``) and solves
  them in the form the prediction cadence makes fastest, instead of only updating
  R = (HᵀH+γI)⁻¹ per batch; the recursive form is ``solver="woodbury"`` (docs/analytic.md);
- every class of the label space has a column from the start (Q's columns are zero until the
  class arrives), and classes never learned score ``-inf``;
- with a label hierarchy each level has its own head, fitted on the samples labelled at that level;
- there is no gradient-trained base phase: the backbone comes from :mod:`learners.backbones.backbone`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch

from learners.analytic import AnalyticConfig, AnalyticLearner
from learners.capabilities import AdditiveStatistics, Mergeable
from learners.levels import Levels
from learners.linalg.ridge import RecursiveRidge
from learners.state.learner_state import LearnerState


class ACILConfig(AnalyticConfig):
    """G-ACIL options: those of every analytic learner."""


class ACIL(AnalyticLearner, Mergeable, AdditiveStatistics):
    """G-ACIL: frozen backbone, random ReLU buffer, exact streaming ridge head per level.

    ``learn`` absorbs each sample exactly once and ignores ``iterations``. ``state_dict`` saves
    the statistics and the cached solution with its cadence (:meth:`RecursiveRidge.state_dict`):
    a restored learner goes on bit for bit (a checkpoint from before the cache was saved: to
    rounding). ``merge`` adds another learner's statistics.
    """

    name = "acil"
    config_model = ACILConfig
    config: ACILConfig
    check_config: ClassVar[dict[str, Any]] = {"buffer_size": 64}

    def _build_heads(self, width: int) -> None:
        self.heads = [
            RecursiveRidge(width, classes, self.config.gamma, self.config.solver, self.device)
            for classes in self.problem.num_classes
        ]

    def has_learned(self) -> bool:
        return any(bool(head.counts.any()) for head in self.heads)

    def _absorb(
        self, features: torch.Tensor, expanded: torch.Tensor, y: torch.Tensor, level: Levels
    ) -> None:
        for lvl, rows in self.level_rows(level):
            self.heads[lvl].fit_labels(expanded[rows], y[rows])

    def weights(self, level: int = 0) -> torch.Tensor:
        """The ridge solution W [width, num_classes[level]] (float64) predictions use."""
        return self.heads[level].weights()

    def _score(self, expanded: torch.Tensor, level: int) -> torch.Tensor:
        scores = expanded @ self.weights(level)
        return scores.masked_fill(self.heads[level].counts == 0, float("-inf"))

    @property
    def can_merge(self) -> bool:
        return self.config.solver != "woodbury"  # woodbury keeps no statistics

    def merge(self, other: ACIL) -> None:
        """Absorb what ``other`` learned: afterwards this learner equals one that saw both streams.

        Both must have the same config (so the same seed, backbone and buffer) and problem.
        """
        self.refuse_foreign(other)
        if not torch.equal(other.buffer.weight.to(self.device), self.buffer.weight):
            raise ValueError(f"cannot merge {self.name} learners whose buffer layers differ")
        for head, other_head in zip(self.heads, other.heads, strict=True):
            head.merge(other_head)

    def additive_statistics(self) -> list[torch.Tensor]:
        return [t for head in self.heads for t in head.statistics()]

    def statistics_changed(self) -> None:
        for head in self.heads:
            head.drop_cache()

    def state_dict(self) -> LearnerState:
        state = self._feature_state()
        for lvl, head in enumerate(self.heads):
            state.put(f"heads.{lvl}", head.state_dict())
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        self._load_feature_state(state)
        for lvl, head in enumerate(self.heads):
            head.load_state_dict(state.part(f"heads.{lvl}"))

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for head in self.heads:
            head.to(self.device)
        return self
