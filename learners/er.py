"""Experience replay (ER), the i-Blurry / Si-Blurry baseline.

Each gradient step trains on the current stream micro-batch joined with an equally large batch
drawn from a replay memory; the stream samples enter the memory after the step, as in i-Blurry's
``online_step``. The memory's insertion policy and retrieval mode are config options
(``memory.policy``, ``memory.retrieval``, see :mod:`memory.config`); ER gives the memory its
backbone's features as embeddings (for ``nearest`` retrieval, queried with the stream batch) and
its per-sample cross-entropy as the loss (for the ``clib`` policy). The classifier has one linear
head per hierarchy level with a slot for every class; classes the learner has not seen are
masked out of the softmax, which is the same as i-Blurry's head that grows a column per new class.

Not from the ER papers: on a detected concept drift ER with a reservoir memory can
``grow_recent``: the reservoir restarts its count, so the samples after the drift displace stored
ones quickly and their share of the memory (and of the replay batches) grows
(``ReplayMemory.favour_recent``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from learners.backbones.backbone import build_backbone, seeded_linear
from learners.base import Learner, Problem
from learners.capabilities import (
    DriftAction,
    DriftAdaptive,
    FusedPrediction,
    MultiLevelPrediction,
    PurePrediction,
)
from learners.levels import level_rows
from learners.replay_training import (
    HeadPrediction,
    ReplayConfig,
    ReplayTraining,
)


class ERConfig(ReplayConfig):
    """ER's options are those of every replay learner (:class:`ReplayConfig`)."""


class ER(
    HeadPrediction,
    ReplayTraining,
    Learner,
    FusedPrediction,
    MultiLevelPrediction,
    PurePrediction,
    DriftAdaptive,
):
    """Experience replay with a configurable memory and a masked growing head per level.

    ``learn`` (the replay step), ``predict_then_learn``, checkpoints and device moves are those
    of :class:`~learners.replay_training.ReplayTraining`; this class supplies the model,
    ``_step`` and ``_head``."""

    name = "er"
    config_model = ERConfig
    config: ERConfig
    check_config: ClassVar[dict[str, Any]] = {
        "backbone": {"hidden": [32], "out_dim": 16},
        "memory": {"capacity": 50},
    }

    def __init__(self, problem: Problem, config: ERConfig) -> None:
        super().__init__(problem, config)
        self.backbone = build_backbone(config.backbone, problem.input_shape, config.seed)
        self.heads = nn.ModuleList(
            seeded_linear(self.backbone.out_dim, k, config.seed + 1 + level)
            for level, k in enumerate(problem.num_classes)
        )
        self._build_training(
            nn.ModuleDict({"backbone": self.backbone, "heads": self.heads}), self._embed
        )

    def _head(self, features: torch.Tensor, level: int) -> torch.Tensor:
        return self.heads[level](features)

    def _logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        return self._masked(features, level, self.seen[level])

    @property
    def drift_actions(self) -> frozenset[DriftAction]:  # type: ignore[override]
        # Only a reservoir weighs samples by how many came before; the class-balanced policies
        # store every new sample already.
        reservoir = self.config.memory.policy == "reservoir"
        return frozenset({DriftAction.GROW_RECENT}) if reservoir else frozenset()

    def on_drift(self, action: DriftAction) -> None:
        if action is DriftAction.GROW_RECENT:
            self.memory.favour_recent()

    def _losses(self, features: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each sample against the head of its own level."""
        if self.problem.num_levels == 1:
            return nn.functional.cross_entropy(self._logits(features, 0), y, reduction="none")
        losses = features.new_zeros(len(y))
        for lvl, rows in level_rows(level, self.problem.num_levels):
            logits = self._logits(features[rows], lvl)
            losses[rows] = nn.functional.cross_entropy(logits, y[rows], reduction="none")
        return losses

    @torch.no_grad()
    def _sample_losses(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x.to(self.device, torch.float32))
        return self._losses(features, y.to(self.device), level.to(self.device))

    def _step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        level: torch.Tensor,
        stream_rows: int,
        seen_before: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        features = self.backbone(x)
        loss = self._losses(features, y, level).mean()
        return self._update(loss, features, level, stream_rows, seen_before)
