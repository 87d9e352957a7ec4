"""Feature extractors shared by the learners: ``identity``, ``mlp`` and a small ``cnn``.

Every backbone maps a batch of inputs ``[B, *input_shape]`` to features ``[B, out_dim]`` and is
initialised from its own seed, without touching the global RNG, so two learners built with the
same seed start identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class BackboneConfig(BaseModel):
    """Which backbone to build and how big."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["identity", "mlp", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256], description="mlp hidden widths")
    channels: list[int] = Field(default_factory=lambda: [32, 64], description="cnn conv widths")
    out_dim: int = Field(128, gt=0, description="feature size of mlp/cnn")
    freeze: bool = Field(False, description="keep backbone weights fixed while learning")


class Backbone(nn.Module):
    """A feature extractor with a known output size."""

    out_dim: int


class Identity(Backbone):
    """Inputs flattened, as features."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_dim = 1
        for size in input_shape:
            self.out_dim *= int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class MLP(Backbone):
    """Flatten, then ReLU layers of the given widths, then a projection to ``out_dim``."""

    def __init__(self, input_shape: tuple[int, ...], hidden: list[int], out_dim: int) -> None:
        super().__init__()
        in_dim = Identity(input_shape).out_dim
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers += [nn.Linear(in_dim, out_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(Backbone):
    """3x3 conv + BN-free ReLU blocks with 2x2 pooling, global average pooling, projection.

    No batch norm: running statistics drift under a non-stationary single-pass stream and
    make predictions depend on batch composition.
    """

    def __init__(self, input_shape: tuple[int, ...], channels: list[int], out_dim: int) -> None:
        super().__init__()
        if len(input_shape) == 2:
            in_channels = 1
        elif len(input_shape) == 3:
            in_channels = int(input_shape[0])
        else:
            raise ValueError(f"cnn backbone needs image inputs [C,H,W] or [H,W], got {input_shape}")
        self.image_rank = len(input_shape)
        layers: list[nn.Module] = []
        for width in channels:
            layers += [
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(in_channels, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_rank == 2:
            x = x.unsqueeze(1)
        return self.project(self.features(x).mean(dim=(2, 3)))


BackboneBuilder = Callable[[BackboneConfig, tuple[int, ...]], Backbone]

BACKBONES: dict[str, BackboneBuilder] = {
    "identity": lambda cfg, shape: Identity(shape),
    "mlp": lambda cfg, shape: MLP(shape, cfg.hidden, cfg.out_dim),
    "cnn": lambda cfg, shape: SmallCNN(shape, cfg.channels, cfg.out_dim),
}


def build_backbone(config: BackboneConfig, input_shape: tuple[int, ...], seed: int) -> Backbone:
    """Build the configured backbone with weights drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = BACKBONES[config.name](config, tuple(input_shape))
    if config.freeze:
        backbone.requires_grad_(False)
    return backbone


def seeded_linear(in_dim: int, out_dim: int, seed: int) -> nn.Linear:
    """An ``nn.Linear`` initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_dim, out_dim)
