"""AEF-OCL: an analytic ridge head rebalanced with Gaussian pseudo-features (imbalanced streams).

Zhuang et al., "Online Analytic Exemplar-Free Continual Learning with Large Models for Imbalanced
Autonomous Driving Task" (IEEE TVT 2024, arXiv 2405.17779). A ridge head fitted on an imbalanced
stream leans towards the frequent classes. AEF-OCL keeps, per class, the running mean and
variance of the backbone features; before predicting it draws, for every class, Gaussian
pseudo-features N(mean, noise²·diag(var)) until the class has as many samples as the largest
one, passes them through the buffer layer, fits them into a *temporary* copy of the ridge
statistics, and predicts with that balanced solution. The real statistics never see a
pseudo-feature, so the learner stays exact and mergeable.

Streaming schedule of the redraw: the pseudo-features are redrawn at the first prediction after
``refresh_every`` samples of their level were learned since the last draw. In between, the
samples learned go into the balanced solution exactly (appended to its factorisation, or, when
that runs out of room, by rebuilding it from the real statistics and the same draw), so only
the pseudo part is up to ``refresh_every`` samples old.

Deviations from the official ``AEFOCL`` (ZHUANGHP/Analytic-continual-learning), on purpose:
- the official ``update()`` fits the pseudo-features into the real head and restores a backup at
  the next ``fit``; two evaluations in a row therefore back up the polluted head and add a
  second round of pseudo-features to it for good. Here they only ever go into a copy;
- the variance is accumulated with Chan/Welford updates (float64) instead of E[X²] − E[X]²,
  which cancels catastrophically and trips the official ``assert (std >= 0)``;
- each draw is seeded by (seed, level, draw index), not taken from the global RNG, and the class
  moments it was made from are kept, so it can be made again exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Self

import numpy as np
import torch
from pydantic import Field

from learners.acil import ACIL, ACILConfig
from learners.base import Problem
from learners.capabilities import ClassMomentsView, MomentStatistics
from learners.levels import Levels
from learners.linalg.class_moments import ClassMoments
from learners.linalg.ridge import RidgeSolution, load_solution, one_hot, solution_state
from learners.state.learner_state import LearnerState

PSEUDO_CHUNK = 4096  # pseudo-features drawn and fitted per step (bounds the temporary memory)


class AEFOCLConfig(ACILConfig):
    noise: float = Field(
        1.0, ge=0, description="scale of the pseudo-features' standard deviation (official: 1)"
    )
    refresh_every: int = Field(
        1000,
        gt=0,
        description="samples learned (per level) before the next prediction redraws the "
        "pseudo-features; 1 redraws before every prediction that follows learning",
    )


def pseudo_feature_generator(
    moments: ClassMoments, noise: float, generator: torch.Generator, chunk: int = PSEUDO_CHUNK
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Gaussian pseudo-features (features, labels) that fill every seen class up to the peak count.

    Class c gets ``peak − count_c`` draws from N(mean_c, (noise·std_c)²) per dimension. Noise is
    drawn on the CPU from ``generator`` so a seed gives the same draws on every device.
    """
    counts = moments.counts
    if not bool((counts > 0).any()):
        return
    missing = (counts.max() - counts).masked_fill(counts == 0, 0).round().long().cpu()
    labels = torch.repeat_interleave(torch.arange(len(counts)), missing)
    std = moments.std() * noise
    for start in range(0, len(labels), chunk):
        rows = labels[start : start + chunk]
        z = torch.randn(len(rows), moments.mean.shape[1], generator=generator, dtype=torch.float64)
        rows = rows.to(counts.device)
        yield moments.mean[rows] + z.to(counts.device) * std[rows], rows


class AEFOCL(ACIL, MomentStatistics):
    """AEF-OCL: G-ACIL whose predictions come from a pseudo-feature-balanced copy of the head.

    ``iterations`` is ignored as in :class:`learners.acil.ACIL`. A draw is reproducible from
    the class moments it was made from and its index, both kept (and checkpointed), so a
    balanced solution dropped for room or a device move is rebuilt from the same
    pseudo-features. A checkpoint also carries the balanced solution itself
    (:func:`learners.linalg.ridge.solution_state`), so a restored learner goes on bit for bit;
    one from before it did rebuilds it, equal to rounding.
    """

    name = "aef-ocl"
    config_model = AEFOCLConfig
    config: AEFOCLConfig
    check_config: ClassVar[dict[str, Any]] = {"buffer_size": 64}

    def __init__(self, problem: Problem, config: AEFOCLConfig) -> None:
        super().__init__(problem, config)
        dim = self.backbone.out_dim
        self.moments = [ClassMoments(classes, dim, "diagonal") for classes in problem.num_classes]
        levels = problem.num_levels
        self.drawn: list[ClassMoments | None] = [None] * levels  # the moments of the last draw
        self.draws = [0] * levels
        self.since_draw = [0] * levels
        self.balanced: list[RidgeSolution | None] = [None] * levels

    def _absorb(
        self, features: torch.Tensor, expanded: torch.Tensor, y: torch.Tensor, level: Levels
    ) -> None:
        for lvl, rows in self.level_rows(level):
            labels = y[rows]
            H = expanded[rows]
            self.heads[lvl].fit_labels(H, labels)
            self.moments[lvl].update(features[rows], labels)
            self.since_draw[lvl] += len(labels)
            balanced = self.balanced[lvl]
            if balanced is not None and balanced.room(len(labels)):
                balanced.append(H, one_hot(labels, self.problem.num_classes[lvl]))
            else:
                self.balanced[lvl] = None

    def weights(self, level: int = 0) -> torch.Tensor:
        """The balanced solution: the real statistics plus the last draw of pseudo-features."""
        if self.heads[level].cadence.solved():
            self.balanced[level] = None  # solve in the form the new cadence wants
        if self.drawn[level] is None or self.since_draw[level] >= self.config.refresh_every:
            self.drawn[level] = self.moments[level].copy()
            self.draws[level] += 1
            self.since_draw[level] = 0
            self.balanced[level] = None
        balanced = self.balanced[level]
        if balanced is None:
            balanced = self.heads[level].augmented(self._pseudo_rows(level))
            self.balanced[level] = balanced
        return balanced.weights()

    def draw_generator(self, level: int) -> torch.Generator:
        """The generator of the current draw at ``level``: seeded by (seed, level, draw index)."""
        entropy = [self.config.seed % 2**64, level, self.draws[level]]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        return torch.Generator().manual_seed(seed)

    def _pseudo_rows(self, level: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        drawn = self.drawn[level]
        assert drawn is not None
        classes = self.problem.num_classes[level]
        draws = pseudo_feature_generator(drawn, self.config.noise, self.draw_generator(level))
        for features, labels in draws:
            yield self.buffer(features), one_hot(labels, classes)

    def moment_statistics(self) -> list[ClassMomentsView]:
        return [ClassMomentsView(m.counts, m.mean, m.m2, pooled=False) for m in self.moments]

    def statistics_changed(self) -> None:
        """As :meth:`ACIL.statistics_changed`; the next prediction draws afresh."""
        super().statistics_changed()
        self.drawn = [None] * self.problem.num_levels
        self.balanced = [None] * self.problem.num_levels

    def merge(self, other: ACIL) -> None:
        """As :meth:`ACIL.merge`, plus the class moments; the next prediction draws afresh."""
        super().merge(other)
        assert isinstance(other, AEFOCL)
        for moments, other_moments in zip(self.moments, other.moments, strict=True):
            moments.merge(other_moments)
        self.drawn = [None] * self.problem.num_levels
        self.balanced = [None] * self.problem.num_levels

    def state_dict(self) -> LearnerState:
        state = super().state_dict()
        for lvl, moments in enumerate(self.moments):
            state.put(f"moments.{lvl}", moments.state_dict())
            drawn = self.drawn[lvl]
            if drawn is not None:
                state.put(f"drawn.{lvl}", drawn.state_dict())
            balanced = self.balanced[lvl]
            if balanced is not None:
                state.put(f"balanced.{lvl}", solution_state(balanced))
        state.meta.update(
            draws=list(self.draws),
            since_draw=list(self.since_draw),
            drawn=[d is not None for d in self.drawn],
            balanced=[b is not None for b in self.balanced],
        )
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        super().load_state_dict(state)
        for lvl, moments in enumerate(self.moments):
            moments.load_state_dict(state.part(f"moments.{lvl}"))
            drawn = None
            if state.meta["drawn"][lvl]:
                classes, dim = moments.mean.shape
                drawn = ClassMoments(classes, dim, "diagonal", device=self.device)
                drawn.load_state_dict(state.part(f"drawn.{lvl}"))
            self.drawn[lvl] = drawn
        self.draws = [int(n) for n in state.meta["draws"]]
        self.since_draw = [int(n) for n in state.meta["since_draw"]]
        self.balanced = [None] * self.problem.num_levels
        kept = state.meta.get("balanced")  # absent from checkpoints before it was saved
        if kept is None:
            return
        levels = self.problem.num_levels
        if (
            not isinstance(kept, list)
            or len(kept) != levels
            or any(type(b) is not bool for b in kept)
        ):
            raise ValueError(f"balanced is {kept!r}, not {levels} flags")
        balanced: list[RidgeSolution | None] = [None] * levels
        for lvl, head in enumerate(self.heads):
            if kept[lvl]:
                balanced[lvl] = load_solution(
                    state.part(f"balanced.{lvl}"),
                    head.dim,
                    head.outputs,
                    head.capacity,
                    self.device,
                )
        self.balanced = balanced

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for moments in (*self.moments, *(d for d in self.drawn if d is not None)):
            moments.to(self.device)
        self.balanced = [None] * self.problem.num_levels
        return self
