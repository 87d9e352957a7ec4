"""The analytic learners' shared part (G-ACIL, AEF-OCL, DS-AL): a frozen backbone, a fixed random
*buffer* layer (a random linear map then an activation) and ridge heads over its features
(:mod:`learners.linalg.ridge`), W = (HᵀH + γI)⁻¹ HᵀY over every sample seen, which is the weight
matrix joint training on all the data would give (ACIL, Zhuang et al., NeurIPS 2022; G-ACIL,
arXiv 2403.15706).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.base import Learner, LearnerConfig, Problem
from learners.capabilities import FusedPrediction
from learners.levels import Levels, Rows, level_index, level_rows, padded_scores
from learners.linalg.ridge import Solver
from learners.machine_memory import memory_bytes
from learners.registry import LearnerConfigError
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


DEFAULT_WIDTH = {"cpu": 1024, "cuda": 8192}
"""The buffer width by device type when the config leaves it out. Each sample costs O(d²) in
the heads whatever the input size (the projection, O(d_in·d), is small beside it), so the
device alone decides: 1024 keeps G-ACIL, AEF-OCL and DS-AL above 1,000 samples/s on a CPU
with every batch predicted, even on one thread of a busy machine (at 2048 DS-AL and AEF-OCL
fall below that there); a GPU runs the d×d products of 8192 cheaply (docs/analytic.md)."""


def default_width(device: torch.device) -> int:
    """The buffer width a config without ``buffer_size`` gets on ``device``."""
    return DEFAULT_WIDTH.get(device.type, DEFAULT_WIDTH["cpu"])


class AnalyticConfig(LearnerConfig):
    """Options shared by the learners built on a random buffer and ridge heads."""

    backbone: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(name="identity"),
        description="feature extractor (frozen); identity uses the inputs as features",
    )
    buffer_size: int | None = Field(
        None,
        gt=0,
        description="width d of the random buffer layer; null: by device, "
        f"{DEFAULT_WIDTH['cpu']} on a CPU, {DEFAULT_WIDTH['cuda']} on a GPU (docs/analytic.md "
        "has the accuracy/speed frontier); a head keeps two d×d float64 matrices, "
        "1 GiB at 8192",
    )
    gamma: float = Field(
        0.1,
        gt=0,
        description="ridge regularisation γ (too small for the features' scale: one error, "
        "raise gamma)",
    )
    solver: Solver = Field(
        "auto",
        description="auto: keep HᵀH, HᵀY and solve in the form the prediction cadence makes "
        "fastest (exact, mergeable); lazy: the same statistics, always solved by a Cholesky "
        "factorisation when a prediction needs it (fastest when predictions are rare); "
        "woodbury: update (HᵀH+γI)⁻¹ and W per batch as the official code does (no merge)",
    )


class AnalyticLearner(Learner, FusedPrediction):
    """What the analytic learners share: a frozen backbone, a random buffer, per-level rows.

    ``learn`` absorbs each sample exactly once and ignores ``iterations``: a closed-form update
    has no steps to repeat, and ``iterations=0`` (a fractional ``online_iter``) must still absorb
    the batch. ``predict_then_learn`` runs the backbone and the buffer once for the prediction
    and the update of a batch (the engine predicts every batch before learning it).
    """

    frozen_backbone = True

    config: AnalyticConfig
    buffer_activation: ClassVar[Activation] = "relu"
    # restore_tolerance stays 0: a checkpoint carries each head's cached solution, cadence and
    # deferred Gram rows (learners.linalg.ridge), so a restored learner goes on bit for bit

    def __init__(self, problem: Problem, config: AnalyticConfig) -> None:
        super().__init__(problem, config)
        frozen = config.backbone.model_copy(update={"freeze": True})
        self.backbone = build_backbone(frozen, problem.input_shape, config.seed).eval()
        self._build(config.buffer_size or default_width(self.device))

    heads_per_level: ClassVar[int] = 1
    """Ridge heads per hierarchy level (DS-AL keeps a main and a compensation head)."""

    def _refuse_beyond_this_device(self, width: int) -> None:
        """A ``LearnerConfigError`` when the heads' d×d matrices (two float64 each: G and its
        factor or inverse) would not fit in the device's memory (learners/machine_memory.py)."""
        heads = self.heads_per_level * self.problem.num_levels
        needed = heads * 2 * 8 * width * width
        available = memory_bytes(self.device)
        if available is not None and needed > available:
            raise LearnerConfigError(
                f"invalid learner config: buffer_size: a width of {width:,} gives {heads} ridge "
                f"head(s) of two {width:,}×{width:,} float64 matrices, {needed / 2**30:,.1f} "
                f"GiB, more than this {self.device.type} device's {available / 2**30:,.1f} "
                "GiB; lower buffer_size (docs/analytic.md has the accuracy/speed frontier)"
            )

    @property
    def width(self) -> int:
        """The buffer width d in use (``buffer_size``, or the default of the device)."""
        return self.buffer.size

    def _build(self, width: int) -> None:
        """The random buffer of ``width`` and empty heads over it."""
        self._refuse_beyond_this_device(width)
        self.buffer = RandomBuffer(
            self.backbone.out_dim, width, self.config.seed + 1, self.buffer_activation
        )
        self.buffer.to(self.device)
        self._build_heads(width)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        return self._score(self.expand(x), level_index(level))

    @torch.no_grad()
    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        features = self.features(x)
        self._absorb(features, self.buffer(features), y.to(self.device), level)

    @torch.no_grad()
    def predict_then_learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        features = self.features(x)
        expanded = self.buffer(features)
        y = y.to(self.device)
        levels = None if level is None else level.to(self.device)
        scores = padded_scores(
            levels, self.problem.num_classes, len(y), lambda at, lvl: self._score(expanded[at], lvl)
        )
        self._absorb(features, expanded, y, level)
        return scores

    @abstractmethod
    def _score(self, expanded: torch.Tensor, level: int) -> torch.Tensor:
        """Scores [B, num_classes[level]] (float64) of buffer features ``expanded``; classes
        never learned at ``level`` score ``-inf``."""

    @abstractmethod
    def _absorb(
        self, features: torch.Tensor, expanded: torch.Tensor, y: torch.Tensor, level: Levels
    ) -> None:
        """Learn a batch from its backbone ``features`` and buffer features ``expanded``."""

    @abstractmethod
    def _build_heads(self, width: int) -> None:
        """Empty ridge heads over a buffer of ``width`` on this learner's device."""

    @abstractmethod
    def has_learned(self) -> bool:
        """Whether any sample was learned (the width can then no longer change)."""

    def _rebuild_for(self, width: int, why: str) -> None:
        """Take ``width`` when the config leaves it to the device and nothing was learned."""
        if width == self.width:
            return
        if self.config.buffer_size is not None or self.has_learned():
            raise ValueError(
                f"{self.name}: buffer width {self.width} cannot become {width} ({why})"
            )
        self._build(width)

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
        saved = state.tensors.get("buffer.weight")
        if saved is not None and saved.ndim == 2 and saved.shape[1] != self.width:
            self._rebuild_for(int(saved.shape[1]), "the checkpoint's width")

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
        """Move to ``device``; a learner that has learned nothing and was given no
        ``buffer_size`` takes the device's default width first."""
        super().to(device)
        self.backbone.to(self.device)
        self.buffer.to(self.device)
        width = default_width(self.device)
        if self.config.buffer_size is None and width != self.width and not self.has_learned():
            self._build(width)
        return self
