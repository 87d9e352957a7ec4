"""Supervised pretraining of a backbone, so users without pretrained weights can still run
frozen-backbone learners (MVP, NMC, ...) on a useful feature extractor.

The backbone is trained with a temporary linear head (thrown away afterwards) by Adam on
cross-entropy, for a few epochs over the given samples — typically the classes of a "first
session", or other data than the stream that will be learned later. Only the backbone is saved,
as safetensors, with its config and the training summary in the file's metadata; the file loads
back through ``BackboneConfig.weights``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, Field
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from learners.backbones.backbone import (
    Backbone,
    BackboneConfig,
    build_backbone,
    seeded_linear,
    weights_module,
)
from learners.base import MAX_SEED
from learners.config_model import ConfigModel

METADATA_KEY = "streamcl.pretrain"


class PretrainConfig(ConfigModel):
    """How long and how fast to pretrain."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(5, gt=0, description="passes over the training samples")
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)


@dataclass
class PretrainResult:
    backbone: Backbone
    classes: list[int]
    train_accuracy: float
    test_accuracy: float | None
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": self.seconds,
            "epoch_losses": self.epoch_losses,
        }


def pretrain(
    backbone_config: BackboneConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    config: PretrainConfig,
    device: torch.device | str = "cpu",
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> PretrainResult:
    """Train a fresh backbone (from ``backbone_config``, unfrozen) and a temporary head on
    ``(x, y)``; report accuracy on ``test`` when given (labels must be among ``y``'s)."""
    started = time.perf_counter()
    classes = sorted(int(c) for c in torch.unique(y))
    # Dataset labels -> head rows 0..K-1.
    lookup = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    lookup[classes] = torch.arange(len(classes))
    trainable = backbone_config.model_copy(update={"freeze": False})
    backbone = build_backbone(trainable, tuple(x.shape[1:]), config.seed).to(device)
    head = seeded_linear(backbone.out_dim, len(classes), config.seed + 1).to(device)
    model = nn.Sequential(backbone, head)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    targets = lookup[y]
    losses = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = model(x[rows].to(device, torch.float32))
            loss = F.cross_entropy(logits, targets[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(y))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    train_accuracy = accuracy(model, x, targets, config.batch_size, device)
    test_accuracy = None
    if test is not None:
        test_accuracy = accuracy(model, test[0], lookup[test[1]], config.batch_size, device)
    backbone.requires_grad_(False)
    return PretrainResult(
        backbone.cpu().eval(),
        classes,
        train_accuracy,
        test_accuracy,
        time.perf_counter() - started,
        losses,
    )


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int, device: Any
) -> float:
    model.eval()
    hits = 0
    for start in range(0, len(targets), 4 * batch_size):
        logits = model(x[start : start + 4 * batch_size].to(device, torch.float32))
        hits += int((logits.argmax(1).cpu() == targets[start : start + 4 * batch_size]).sum())
    return hits / max(len(targets), 1)


def save_backbone(
    backbone: Backbone,
    backbone_config: BackboneConfig,
    path: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the backbone's weights as safetensors, its config and ``extra`` as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = weights_module(backbone, backbone_config).state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = backbone_config.model_dump(mode="json", exclude={"weights", "freeze"})
    metadata = {METADATA_KEY: json.dumps({"backbone": config, **(extra or {})}, allow_nan=False)}
    save_file(tensors, str(path), metadata=metadata)
    return path
