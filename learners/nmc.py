"""Nearest class mean (NMC): each class is the running mean of its features.

Predictions are negative squared Euclidean distances to the class means. The class sums and
counts are updated with one ``index_add_`` per micro-batch, which equals updating per sample, so
the result does not depend on the batch size. Classes never seen score ``-inf``. On a detected
concept drift it can ``reset``: the class means start afresh from the samples that follow.
Two learners ``merge`` by adding their sums and counts.

Sums are float64, so the means stay exact over a long stream. Scoring reads float32 copies of
``2 * mean`` and ``-||mean||^2`` (``-inf`` for unseen classes) that ``learn`` refreshes for the
classes it touched, so ``predict`` is one float32 multiply-add against the backbone's float32
output, with no pass over the [C, d] means per call (the scores were float32 anyway). The
engine asks for the prequential prediction and the update in one ``predict_then_learn`` call
(:class:`~learners.capabilities.FusedPrediction`): the scores before the batch is added, from
the one backbone pass both need. Called apart, the backbone output for the last input tensor
is kept, so ``learn`` on the tensor ``predict`` just saw (same object, not modified in place
since) does not run the backbone again either.
"""

from __future__ import annotations

import torch
from pydantic import Field

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.base import Learner, LearnerConfig, Problem
from learners.capabilities import (
    AdditiveStatistics,
    DriftAction,
    DriftAdaptive,
    FusedPrediction,
    Mergeable,
)
from learners.levels import Levels, level_index, level_rows, padded_scores
from learners.state.learner_state import LearnerState


class NMCConfig(LearnerConfig):
    backbone: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(name="identity"),
        description="feature extractor (frozen); identity uses the inputs as features",
    )
    normalize: bool = Field(False, description="L2-normalise features before averaging")


class NMC(Learner, DriftAdaptive, Mergeable, AdditiveStatistics, FusedPrediction):
    """Nearest class mean over a frozen backbone, one set of means per hierarchy level."""

    name = "nmc"
    config_model = NMCConfig
    frozen_backbone = True
    config: NMCConfig
    drift_actions = frozenset({DriftAction.RESET})

    def __init__(self, problem: Problem, config: NMCConfig) -> None:
        super().__init__(problem, config)
        frozen = config.backbone.model_copy(update={"freeze": True})
        self.backbone = build_backbone(frozen, problem.input_shape, config.seed).eval()
        dim = self.backbone.out_dim
        self.sums = [torch.zeros(k, dim, dtype=torch.float64) for k in problem.num_classes]
        self.counts = [torch.zeros(k, dtype=torch.float64) for k in problem.num_classes]
        # scoring copies, per level: 2 * mean [C, d] and -||mean||^2 [C], float32
        self._weights = [torch.zeros(k, dim) for k in problem.num_classes]
        self._offsets = [torch.full((k,), float("-inf")) for k in problem.num_classes]
        # (input, its in-place version counter, backbone output): the backbone is frozen, so
        # these stay right until the input changes or the backbone is replaced
        self._last: tuple[torch.Tensor, int, torch.Tensor] | None = None

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's float32 output for ``x`` (kept for a next call on the same ``x``)."""
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        embedded = self.backbone(x.to(self.device, torch.float32))
        self._last = (x, x._version, embedded)
        return embedded

    def _normalized(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.normalize:
            return torch.nn.functional.normalize(features, dim=1)
        return features

    def _refresh(self, level: int, classes: torch.Tensor | None = None) -> None:
        """Recompute the scoring copies of ``classes`` (all when None) from the sums."""
        rows = slice(None) if classes is None else classes
        counts = self.counts[level][rows]
        means = self.sums[level][rows] / counts.clamp(min=1).unsqueeze(1)
        # ||f - m||^2 = ||f||^2 - 2 f.m + ||m||^2; ||f||^2 is the same for every class. Unseen
        # classes get -inf in the offset, which the product cannot cancel (features are
        # finite): one multiply-add scores and masks, with no pass over the [B, C] scores.
        offset = (means * means).sum(1).neg_().masked_fill_(counts == 0, float("-inf"))
        self._weights[level][rows] = (2 * means).to(torch.float32)
        self._offsets[level][rows] = offset.to(torch.float32)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        level = level_index(level)
        features = self._normalized(self._embed(x))
        return torch.addmm(self._offsets[level], features, self._weights[level].T)

    @torch.no_grad()
    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        self._learn_embedded(self._embed(x), y, level)

    @torch.no_grad()
    def predict_then_learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        """``predict`` then ``learn`` from one backbone pass and one call: the engine's
        prequential step without a second entry (the two calls give the same numbers)."""
        embedded = self._embed(x)
        features = self._normalized(embedded)
        levels = None if level is None else level.to(self.device)
        scores = padded_scores(
            levels,
            self.problem.num_classes,
            len(x),
            lambda at, lvl: torch.addmm(self._offsets[lvl], features[at], self._weights[lvl].T),
        )
        self._learn_embedded(embedded, y, level)
        return scores

    def _learn_embedded(self, embedded: torch.Tensor, y: torch.Tensor, level: Levels) -> None:
        """Add the backbone outputs ``embedded`` of a batch to its classes' sums."""
        features = self._normalized(embedded.to(torch.float64))
        y = y.to(self.device)
        level = None if level is None else level.to(self.device)
        for lvl, rows in level_rows(level, self.problem.num_levels):
            labels = y[rows]
            self.sums[lvl].index_add_(0, labels, features[rows])
            self.counts[lvl].index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
            # a batch with at least C samples pays C rows anyway; a smaller one only its classes
            if len(labels) >= len(self.counts[lvl]):
                self._refresh(lvl)
            elif len(labels):
                self._refresh(lvl, labels.unique())

    def on_drift(self, action: DriftAction) -> None:
        if action is DriftAction.RESET:
            for sums, counts in zip(self.sums, self.counts, strict=True):
                sums.zero_()
                counts.zero_()
            self._refresh_all()

    def merge(self, other: NMC) -> None:
        """Add ``other``'s class sums and counts: the means are then those of both streams."""
        self.refuse_foreign(other)
        for lvl in range(self.problem.num_levels):
            self.sums[lvl] += other.sums[lvl].to(self.device)
            self.counts[lvl] += other.counts[lvl].to(self.device)
        self._refresh_all()

    def _refresh_all(self) -> None:
        for lvl in range(self.problem.num_levels):
            self._refresh(lvl)

    def additive_statistics(self) -> list[torch.Tensor]:
        return [*self.sums, *self.counts]

    def statistics_changed(self) -> None:
        self._refresh_all()

    def state_dict(self) -> LearnerState:
        tensors: dict[str, torch.Tensor] = {}
        for lvl in range(self.problem.num_levels):
            tensors[f"sums.{lvl}"] = self.sums[lvl].cpu()
            tensors[f"counts.{lvl}"] = self.counts[lvl].cpu()
        for key, value in self.backbone.state_dict().items():
            tensors[f"backbone.{key}"] = value.cpu()
        return LearnerState(tensors, {})

    def load_state_dict(self, state: LearnerState) -> None:
        self._last = None
        for lvl, classes in enumerate(self.problem.num_classes):
            dim = self.sums[lvl].shape[1]
            self.sums[lvl] = state.expect(f"sums.{lvl}", (classes, dim)).to(self.device)
            self.counts[lvl] = state.expect(f"counts.{lvl}", (classes,)).to(self.device)
        prefix = "backbone."
        self.backbone.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.tensors.items() if k.startswith(prefix)}
        )
        self._refresh_all()

    def to(self, device: torch.device | str) -> NMC:
        super().to(device)
        self._last = None
        self.backbone.to(self.device)
        self.sums = [s.to(self.device) for s in self.sums]
        self.counts = [c.to(self.device) for c in self.counts]
        self._weights = [w.to(self.device) for w in self._weights]
        self._offsets = [o.to(self.device) for o in self._offsets]
        return self
