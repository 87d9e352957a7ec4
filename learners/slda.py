"""SLDA: streaming linear discriminant analysis on frozen features.

Hayes & Kanan, "Lifelong Machine Learning with Deep Streaming Linear Discriminant Analysis"
(CVPR-W 2020), the head that First Session Adaptation (Panos et al., ICCV 2023) puts on its
frozen backbone. Per class a running mean μ_k; one covariance Σ shared by all classes; with
shrinkage ε the scores are

    Λ = ((1 − ε) Σ + ε I)⁻¹,   score_k(x) = xᵀ Λ μ_k − ½ μ_kᵀ Λ μ_k.

Σ is the pooled within-class covariance S_w / N, accumulated exactly (float64) with Chan et
al.'s parallel update per batch, so it does not depend on batch size or order, and two learners
merge into the one that saw both streams. Λ is solved by Cholesky when a prediction needs it.

Deviations from the official Deep_SLDA ``StreamingLDA``, on purpose:
- its Σ update weighs x − μ_y by n/(n+1) with n the total number of updates, so the first
  sample of a new class adds its raw outer product xxᵀ (μ_y is still 0) to Σ; here each class's
  scatter is weighed by that class's count, which is the exact within-class covariance;
- its update is per sample (a batch with repeated labels loses updates); here batches are exact;
- Σ starts at 0, not at the all-ones matrix, and Λ comes from a Cholesky solve, not ``pinverse``.
"""

from __future__ import annotations

from typing import Self

import torch
from pydantic import Field

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.base import Learner, LearnerConfig, Problem
from learners.capabilities import ClassMomentsView, Mergeable, MomentStatistics
from learners.levels import Levels, level_index, level_rows
from learners.linalg.cholesky import cholesky_solve
from learners.linalg.class_moments import ClassMoments
from learners.state.learner_state import LearnerState
from learners.state.torch_state import load_module_state, module_state


class SLDAConfig(LearnerConfig):
    backbone: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(name="identity"),
        description="feature extractor (frozen); identity uses the inputs as features",
    )
    shrinkage: float = Field(
        1e-4, gt=0, le=1, description="ε in Λ = ((1−ε)Σ + εI)⁻¹ (Deep SLDA default 1e-4)"
    )


class SLDA(Learner, Mergeable, MomentStatistics):
    """Streaming LDA: running class means, shared shrunk covariance, linear scores per level.

    ``learn`` absorbs each sample exactly once and ignores ``iterations``.
    """

    name = "slda"
    config_model = SLDAConfig
    frozen_backbone = True
    config: SLDAConfig

    def __init__(self, problem: Problem, config: SLDAConfig) -> None:
        super().__init__(problem, config)
        frozen = config.backbone.model_copy(update={"freeze": True})
        self.backbone = build_backbone(frozen, problem.input_shape, config.seed).eval()
        dim = self.backbone.out_dim
        self.stats = [ClassMoments(classes, dim, "pooled") for classes in problem.num_classes]
        self._solved: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * problem.num_levels

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.to(self.device, torch.float32)).to(torch.float64)

    @torch.no_grad()
    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        features = self.features(x)
        y = y.to(self.device)
        level = None if level is None else level.to(self.device)
        for lvl, rows in level_rows(level, self.problem.num_levels):
            self.stats[lvl].update(features[rows], y[rows])
            self._solved[lvl] = None

    def discriminant(self, level: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [dim, classes], c [classes]) with scores x·W − c."""
        solved = self._solved[level]
        if solved is None:
            stats = self.stats[level]
            eps = self.config.shrinkage
            total = float(stats.counts.sum())
            A = stats.m2 * ((1 - eps) / max(total, 1.0))
            A.diagonal().add_(eps)
            W = cholesky_solve(stats.mean.T, torch.linalg.cholesky(A))
            solved = (W, 0.5 * (stats.mean.T * W).sum(0))
            self._solved[level] = solved
        return solved

    @torch.no_grad()
    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        level = level_index(level)
        W, c = self.discriminant(level)
        scores = self.features(x) @ W - c
        return scores.masked_fill(self.stats[level].counts == 0, float("-inf"))

    def moment_statistics(self) -> list[ClassMomentsView]:
        return [ClassMomentsView(s.counts, s.mean, s.m2, pooled=True) for s in self.stats]

    def statistics_changed(self) -> None:
        self._solved = [None] * self.problem.num_levels

    def merge(self, other: SLDA) -> None:
        """Absorb what ``other`` learned: this learner then equals one that saw both streams."""
        self.refuse_foreign(other)
        for stats, other_stats in zip(self.stats, other.stats, strict=True):
            stats.merge(other_stats)
        self._solved = [None] * self.problem.num_levels

    def state_dict(self) -> LearnerState:
        state = LearnerState()
        state.put("backbone", module_state(self.backbone))
        for lvl, stats in enumerate(self.stats):
            state.put(f"stats.{lvl}", stats.state_dict())
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        load_module_state(self.backbone, state.part("backbone"))
        for lvl, stats in enumerate(self.stats):
            stats.load_state_dict(state.part(f"stats.{lvl}"))
        self._solved = [None] * self.problem.num_levels

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        self.backbone.to(self.device)
        for stats in self.stats:
            stats.to(self.device)
        self._solved = [None] * self.problem.num_levels
        return self
