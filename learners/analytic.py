"""The analytic learners' shared part (G-ACIL, AEF-OCL, DS-AL): a frozen backbone, a fixed random
*buffer* layer (a random linear map then an activation) and ridge heads over its features
(:mod:`learners.linalg.ridge`), W = (HᵀH + γI)⁻¹ HᵀY over every sample seen, which is the weight
matrix joint training on all the data would give (ACIL, Zhuang et al., NeurIPS 2022; G-ACIL,
arXiv 2403.15706).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.base import Learner, LearnerConfig, Problem
from learners.levels import Rows, level_rows
from learners.linalg.ridge import Solver
from learners.state.learner_state import LearnerState
from learners.state.torch_state import load_module_state, module_state

Activation = Literal["relu", "tanh", "identity"]

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda x: x}


class RandomBuffer(nn.Module):
    """The fixed random "buffer" layer: features ↦ activation(features · B), in float64.

    B is drawn like ``nn.Linear``'s default weights (uniform in ±1/√in_dim, no bias) from
    ``seed`` without touching the global RNG, so learners with the same seed share it.
    """

    def __init__(self, in_dim: int, size: int, seed: int, activation: Activation = "relu") -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / in_dim**0.5
        weight = torch.rand(in_dim, size, generator=generator, dtype=torch.float64)
        self.register_buffer("weight", weight.mul_(2 * bound).sub_(bound))
        self.weight: torch.Tensor
        self.activation = activation

    @property
    def size(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _ACTIVATIONS[self.activation](features.to(torch.float64) @ self.weight)


class AnalyticConfig(LearnerConfig):
    """Options shared by the learners built on a random buffer and ridge heads."""

    backbone: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(name="identity"),
        description="feature extractor (frozen); identity uses the inputs as features",
    )
    buffer_size: int = Field(
        8192,
        gt=0,
        description="width d of the random buffer layer; a head keeps two d×d float64 "
        "matrices (statistics and their Cholesky factor), 1 GiB at 8192",
    )
    gamma: float = Field(0.1, gt=0, description="ridge regularisation γ")
    solver: Solver = Field(
        "lazy",
        description="lazy: keep HᵀH, HᵀY and solve when a prediction needs it (exact, mergeable; "
        "the faster form unless every batch is predicted); woodbury: update (HᵀH+γI)⁻¹ and W "
        "per batch as the official code does (faster when every batch is predicted; no merge)",
    )


class AnalyticLearner(Learner):
    """What the analytic learners share: a frozen backbone, a random buffer, per-level rows.

    ``learn`` absorbs each sample exactly once and ignores ``iterations``: a closed-form update
    has no steps to repeat, and ``iterations=0`` (a fractional ``online_iter``) must still absorb
    the batch.
    """

    config: AnalyticConfig
    buffer_activation: ClassVar[Activation] = "relu"
    # a restored head factorises its statistics afresh, where the live one kept a factorisation
    # exact by Woodbury updates: the two solutions agree to rounding
    restore_tolerance: ClassVar[float] = 1e-9

    def __init__(self, problem: Problem, config: AnalyticConfig) -> None:
        super().__init__(problem, config)
        frozen = config.backbone.model_copy(update={"freeze": True})
        self.backbone = build_backbone(frozen, problem.input_shape, config.seed).eval()
        self.buffer = RandomBuffer(
            self.backbone.out_dim, config.buffer_size, config.seed + 1, self.buffer_activation
        )

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, out_dim] (float64) of inputs ``x``."""
        return self.backbone(x.to(self.device, torch.float32)).to(torch.float64)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Buffer features H [B, buffer_size] (float64) of inputs ``x``."""
        return self.buffer(self.features(x))

    def level_rows(self, level: torch.Tensor | None) -> list[tuple[int, Rows]]:
        """:func:`learners.levels.level_rows` of ``level`` on this learner's device."""
        level = None if level is None else level.to(self.device)
        return level_rows(level, self.problem.num_levels)

    def _check_solver(self, state: LearnerState) -> None:
        if state.meta.get("solver") != self.config.solver:
            raise ValueError(
                f"{self.name} checkpoint was saved with solver={state.meta.get('solver')!r}, "
                f"this learner uses solver={self.config.solver!r}"
            )

    def _feature_state(self) -> LearnerState:
        """Backbone and buffer weights: they define the space the statistics live in."""
        state = LearnerState(meta={"solver": self.config.solver})
        state.put("backbone", module_state(self.backbone))
        state.put("buffer", module_state(self.buffer))
        return state

    def _load_feature_state(self, state: LearnerState) -> None:
        self._check_solver(state)
        load_module_state(self.backbone, state.part("backbone"))
        load_module_state(self.buffer, state.part("buffer"))

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        self.backbone.to(self.device)
        self.buffer.to(self.device)
        return self
