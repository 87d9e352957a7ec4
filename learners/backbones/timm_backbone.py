"""Any timm architecture, by name, as a feature extractor — only where timm is installed.

timm is optional and never installed by streamcl (it pulls torchvision and a CUDA build of
torch). The model is built with ``pretrained=False`` (nothing is downloaded) and its classifier
removed (``num_classes=0``); weights come from the file in ``BackboneConfig.weights``. A plain
ViT does not need timm: the built-in ``vit`` backbone uses timm's parameter names.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from learners.backbones.backbone import Backbone, BackboneError


class TimmUnavailableError(ImportError):
    """The ``timm`` backbone was asked for but timm cannot be imported."""


def import_timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise TimmUnavailableError(
            f"backbone 'timm' needs the timm package, which is not importable here ({exc}); "
            "install timm yourself, or use backbone 'vit' with weights from a .npz, "
            ".safetensors or torch state dict file"
        ) from None


class TimmBackbone(Backbone):
    """A timm model without its classifier: images to pooled features ``[B, num_features]``."""

    def __init__(self, model_name: str, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        timm = import_timm()
        if len(input_shape) not in (2, 3):
            raise BackboneError(
                f"timm backbones need image inputs [C,H,W] or [H,W], got {input_shape}"
            )
        channels = 1 if len(input_shape) == 2 else int(input_shape[0])
        self.image_rank = len(input_shape)
        self.model = timm.create_model(
            model_name, pretrained=False, num_classes=0, in_chans=channels
        )
        self.out_dim = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_rank == 2:
            x = x.unsqueeze(1)
        out: torch.Tensor = self.model(x)
        return out
