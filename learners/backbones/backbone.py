"""Feature extractors shared by the learners: ``identity``, ``mlp``, a small ``cnn``, a ``vit``
(``learners.backbones.vit``) and, where timm is installed, any ``timm`` architecture by name.

Every backbone maps a batch of inputs ``[B, *input_shape]`` to features ``[B, out_dim]`` and is
initialised from its own seed, without touching the global RNG, so two learners built with the
same seed start identical. ``weights`` names a local file (safetensors, torch state dict or a
``.npz`` ViT; see ``learners.backbones.weights``) loaded over that initialisation, e.g. one written
by ``streamcl pretrain``; frozen-backbone learners need such weights to be useful.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field, model_validator
from torch import nn

from learners.backbones.weights import load_backbone_weights
from learners.config_model import ConfigModel

Width = Annotated[int, Field(gt=0)]
"""A layer's width: at least one unit (a zero-width layer makes the backbone's output constant)."""


class ViTOptions(ConfigModel):
    """The size of the ``vit`` backbone (``learners.backbones.vit``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    patch_size: int = Field(4, gt=0, description="square patch side in pixels")
    embed_dim: int = Field(64, gt=0, description="token width (the feature size)")
    depth: int = Field(6, gt=0, description="transformer blocks")
    num_heads: int = Field(4, gt=0, description="attention heads (must divide embed_dim)")
    mlp_ratio: float = Field(2.0, gt=0, description="MLP hidden width / embed_dim")


class BackboneError(ValueError):
    """A backbone that cannot be built for the inputs it is given (says which and why)."""


class BackboneConfig(ConfigModel):
    """Which backbone to build and how big."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["identity", "mlp", "cnn", "vit", "timm"] = "mlp"
    hidden: list[Width] = Field(
        default_factory=lambda: [256], max_length=64, description="mlp hidden widths"
    )
    channels: list[Width] = Field(
        default_factory=lambda: [32, 64], max_length=64, description="cnn conv widths"
    )
    out_dim: int = Field(128, gt=0, description="feature size of mlp/cnn")
    vit: ViTOptions = Field(default_factory=ViTOptions)
    timm_model: str | None = Field(None, description="timm architecture name (name = timm)")
    weights: Path | None = Field(
        None, description="local weights file: .safetensors, .npz (ViT) or a torch state dict"
    )
    freeze: bool = Field(False, description="keep backbone weights fixed while learning")

    @model_validator(mode="after")
    def _timm_needs_a_model(self) -> BackboneConfig:
        if self.name == "timm" and not self.timm_model:
            raise ValueError("backbone 'timm' needs timm_model, e.g. 'resnet18'")
        return self


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
            raise BackboneError(
                f"cnn backbone needs image inputs [C,H,W] or [H,W], got {input_shape}"
            )
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
    "vit": lambda cfg, shape: _vit(cfg, shape),
    "timm": lambda cfg, shape: _timm(cfg, shape),
}


def _vit(config: BackboneConfig, input_shape: tuple[int, ...]) -> Backbone:
    from learners.backbones.vit import ViT  # the ViT module builds on Backbone, defined above

    return ViT(input_shape, config.vit)


def _timm(config: BackboneConfig, input_shape: tuple[int, ...]) -> Backbone:
    from learners.backbones.timm_backbone import TimmBackbone

    return TimmBackbone(str(config.timm_model), input_shape)


# Module initialisers draw from torch's one global generator, so a seeded build forks it; two
# threads building at once (scale-out ranks as threads, a server thread) would otherwise
# interleave their draws and get weights that depend on timing.
_SEEDED_BUILD = threading.Lock()
# Set while a saved state that holds the backbone's tensors is about to be loaded.
_STATE_BRINGS_WEIGHTS: ContextVar[bool] = ContextVar("state_brings_weights", default=False)


@contextmanager
def weights_from_state() -> Iterator[None]:
    """Build backbones without reading their ``weights`` files, for a caller that loads a saved
    state holding the backbone's tensors next (an exported model, a checkpoint): the file the
    model was trained from need not be there any more, nor hold the same weights."""
    token = _STATE_BRINGS_WEIGHTS.set(True)
    try:
        yield
    finally:
        _STATE_BRINGS_WEIGHTS.reset(token)


def build_backbone(config: BackboneConfig, input_shape: tuple[int, ...], seed: int) -> Backbone:
    """Build the configured backbone with weights drawn from ``seed`` (global RNG untouched)."""
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = BACKBONES[config.name](config, tuple(input_shape))
    if config.weights is not None and not _STATE_BRINGS_WEIGHTS.get():
        load_backbone_weights(weights_module(backbone, config), config.weights)
    if config.freeze:
        backbone.requires_grad_(False)
    return backbone


def weights_module(backbone: Backbone, config: BackboneConfig) -> nn.Module:
    """The module whose state dict a weights file holds: a timm backbone's inner timm model
    (so files use timm's own names), else the backbone itself."""
    inner = getattr(backbone, "model", None) if config.name == "timm" else None
    return inner if isinstance(inner, nn.Module) else backbone


def seeded_linear(in_dim: int, out_dim: int, seed: int) -> nn.Linear:
    """An ``nn.Linear`` initialised from ``seed`` without touching the global RNG."""
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_dim, out_dim)
