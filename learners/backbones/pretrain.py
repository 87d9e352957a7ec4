"""Supervised pretraining of a backbone, so users without pretrained weights can still run
frozen-backbone learners (MVP, NMC, ...) on a useful feature extractor.

The backbone is trained with a temporary linear head (thrown away afterwards) by Adam on
cross-entropy, for a few epochs over the given samples — typically the classes of a "first
session", or other data than the stream that will be learned later. Only the backbone is saved,
as safetensors, with its config and the training summary in the file's metadata; the file loads
back through ``BackboneConfig.weights``.

The training samples must hold at least two classes (with one, cross-entropy has no gradient
and the backbone would stay as initialised). Test accuracy is scored only on the test samples
of the classes the training samples hold: the temporary head has no row for any other class.
A loss or weight that turns NaN or infinite stops training with :class:`PretrainDiverged`, so
a diverged backbone is never returned, let alone saved.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, Field
from safetensors.torch import save as save_tensors
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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(5, gt=0, description="passes over the training samples")
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class PretrainError(ValueError):
    """Samples that cannot pretrain a backbone."""


class PretrainDiverged(PretrainError):
    """Training diverged: a loss or weight became NaN or infinite."""

    def __init__(self, what: str, epoch: int) -> None:
        super().__init__(f"training diverged ({what} at epoch {epoch}); lower the learning rate")
        self.what = what  # "loss nan", "loss inf" or "non-finite weights"
        self.epoch = epoch


@dataclass
class PretrainResult:
    backbone: Backbone
    classes: list[int]
    train_accuracy: float
    test_accuracy: float | None
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)
    test_samples: int = 0  # the test samples scored: those of ``classes``

    def summary(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "test_samples": self.test_samples,
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
    ``(x, y)``; report accuracy on the samples of ``test`` whose labels are among ``y``'s.

    Raises :class:`PretrainError` when ``y`` holds fewer than two classes and
    :class:`PretrainDiverged` when training diverges."""
    started = time.perf_counter()
    classes = sorted(int(c) for c in torch.unique(y))
    if len(classes) < 2:
        raise PretrainError(
            f"the training samples hold {len(classes)} class(es) {classes}; "
            "pretraining needs at least 2"
        )
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
    targets = lookup[y.long()]
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
            batch_loss = float(loss.detach())
            if not math.isfinite(batch_loss):
                raise PretrainDiverged(f"loss {batch_loss}", epoch + 1)
            total += batch_loss * len(rows)
        # the last step can break the weights after a finite loss
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise PretrainDiverged("non-finite weights", epoch + 1)
        losses.append(total / len(y))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    train_accuracy = accuracy(model, x, targets, config.batch_size, device)
    test_accuracy, test_samples = None, 0
    if test is not None:
        known = torch.isin(test[1], torch.tensor(classes, dtype=test[1].dtype))
        test_samples = int(known.sum())
        if test_samples:
            test_accuracy = accuracy(
                model, test[0][known], lookup[test[1][known].long()], config.batch_size, device
            )
    backbone.requires_grad_(False)
    return PretrainResult(
        backbone.cpu().eval(),
        classes,
        train_accuracy,
        test_accuracy,
        time.perf_counter() - started,
        losses,
        test_samples,
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
    """Write the backbone's weights as safetensors, its config and ``extra`` as metadata.

    The file is readable as the umask allows (safetensors' own ``save_file`` makes it 0600,
    which kept the weights from a daemon running as another user) and appears whole: written
    beside ``path``, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = weights_module(backbone, backbone_config).state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = backbone_config.model_dump(mode="json", exclude={"weights", "freeze"})
    metadata = {METADATA_KEY: json.dumps({"backbone": config, **(extra or {})}, allow_nan=False)}
    data = save_tensors(tensors, metadata=metadata)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
