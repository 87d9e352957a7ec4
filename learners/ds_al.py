"""DS-AL: dual-stream analytic learning, a ridge main stream plus a compensation stream.

Zhuang et al., "DS-AL: A Dual-Stream Analytic Learning for Exemplar-Free Class-Incremental
Learning" (AAAI 2024). One random linear buffer feeds two ridge heads:

- the main stream fits one-hot labels on ReLU(buffer) features (G-ACIL's head);
- the compensation stream fits, on tanh(buffer) features, the residual Y − ReLU(H)·W_main that
  the main stream leaves on each batch right after absorbing it, with the residual columns of
  classes outside the current batch cleared (previous label cleansing, PLC), so that the
  compensation only corrects the classes being learned;
- predictions are main + C · compensation (C: ``compensation_ratio``).

Deviations from the official ``DSAL`` (ZHUANGHP/Analytic-continual-learning), on purpose:
- PLC there keeps the last ``increase_size`` columns, i.e. the classes of the current phase; a
  stream has no phases, so here the "current" classes are those in the micro-batch. (The
  official slice ``Y[:, :-increase_size]`` also clears nothing when a phase adds no class.)
- both streams keep sufficient statistics (``solver="auto"`` or ``"lazy"``) or the recursive form
  (``solver="woodbury"``), as G-ACIL; each level of a hierarchy has its own pair of streams.

DS-AL has no ``merge``: the compensation targets depend on the main stream's state at each
batch, so two learners that saw halves of a stream do not add up to one that saw all of it.
Both streams' statistics are still sums over batches (:class:`AdditiveStatistics`), which is
what scale-out synchronises: the main stream then equals a single-process run exactly, while
each compensation row is the residual against the main stream its worker held at that batch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch
from pydantic import Field

from learners.analytic import AnalyticConfig, AnalyticLearner
from learners.capabilities import AdditiveStatistics
from learners.levels import Levels
from learners.linalg.ridge import RecursiveRidge, one_hot
from learners.state.learner_state import LearnerState


class DSALConfig(AnalyticConfig):
    gamma_comp: float = Field(
        0.1, gt=0, description="ridge regularisation of the compensation stream"
    )
    compensation_ratio: float = Field(
        0.6, ge=0, description="C: weight of the compensation stream in the output (CIFAR-100: 0.6)"
    )


class DSAL(AnalyticLearner, AdditiveStatistics):
    """DS-AL: ReLU main stream + C × tanh compensation stream fitted to its cleansed residual.

    ``learn`` absorbs each sample exactly once and ignores ``iterations``. ``state_dict`` saves
    both streams' statistics and cached solutions (:meth:`RecursiveRidge.state_dict`), so a
    restored learner goes on bit for bit. This matters more here than for
    :class:`learners.acil.ACIL`: each compensation row is a residual against the main stream's
    solution, so a restored main stream solving afresh (a checkpoint from before the cache was
    saved) rounds differently, and the compensation statistics learn that rounding for good.
    """

    name = "ds-al"
    config_model = DSALConfig
    config: DSALConfig
    check_config: ClassVar[dict[str, Any]] = {"buffer_size": 64}
    buffer_activation = "identity"
    heads_per_level = 2  # main and compensation

    def _build_heads(self, width: int) -> None:
        config, device = self.config, self.device
        self.main = [
            RecursiveRidge(width, classes, config.gamma, config.solver, device)
            for classes in self.problem.num_classes
        ]
        self.comp = [
            RecursiveRidge(width, classes, config.gamma_comp, config.solver, device)
            for classes in self.problem.num_classes
        ]

    def has_learned(self) -> bool:
        return any(bool(head.counts.any()) for head in self.main)

    def _absorb(
        self, features: torch.Tensor, expanded: torch.Tensor, y: torch.Tensor, level: Levels
    ) -> None:
        for lvl, rows in self.level_rows(level):
            labels = y[rows]
            H_main, H_comp = torch.relu(expanded[rows]), torch.tanh(expanded[rows])
            targets = one_hot(labels, self.problem.num_classes[lvl])
            self.main[lvl].fit(H_main, targets, labels)
            residual = targets - H_main @ self.main[lvl].weights()
            current = torch.zeros(targets.shape[1], dtype=torch.bool, device=self.device)
            current[labels] = True
            self.comp[lvl].fit(H_comp, residual.masked_fill_(~current, 0.0))

    def additive_statistics(self) -> list[torch.Tensor]:
        return [t for heads in (self.main, self.comp) for head in heads for t in head.statistics()]

    def statistics_changed(self) -> None:
        for head in (*self.main, *self.comp):
            head.drop_cache()

    def _score(self, expanded: torch.Tensor, level: int) -> torch.Tensor:
        scores = torch.relu(expanded) @ self.main[level].weights()
        scores += self.config.compensation_ratio * (
            torch.tanh(expanded) @ self.comp[level].weights()
        )
        return scores.masked_fill(self.main[level].counts == 0, float("-inf"))

    def state_dict(self) -> LearnerState:
        state = self._feature_state()
        for lvl in range(self.problem.num_levels):
            state.put(f"main.{lvl}", self.main[lvl].state_dict())
            state.put(f"comp.{lvl}", self.comp[lvl].state_dict())
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        self._load_feature_state(state)
        for lvl in range(self.problem.num_levels):
            self.main[lvl].load_state_dict(state.part(f"main.{lvl}"))
            self.comp[lvl].load_state_dict(state.part(f"comp.{lvl}"))

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for head in (*self.main, *self.comp):
            head.to(self.device)
        return self
