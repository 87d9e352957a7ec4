"""Pretraining a backbone and saving it so that learners load it through backbone.weights."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.pretrain import METADATA_KEY, PretrainConfig, pretrain, save_backbone
from learners.base import Problem
from learners.registry import create


def blobs(n: int, classes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    y = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=g)]
    return torch.sigmoid(2 * centres[y] + 0.3 * torch.randn(n, 1, 8, 8, generator=g)), y


VIT = BackboneConfig.model_validate(
    {"name": "vit", "vit": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}}
)


def test_pretraining_learns_the_classes_and_saves_a_loadable_backbone(tmp_path):
    x, y = blobs(200, [3, 5, 8])
    result = pretrain(
        VIT, x, y, PretrainConfig(epochs=3, batch_size=32, lr=3e-3), test=blobs(60, [3, 5, 8], 1)
    )
    assert result.classes == [3, 5, 8]
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.test_accuracy is not None and result.test_accuracy > 0.9
    path = save_backbone(result.backbone, VIT, tmp_path / "vit.safetensors", result.summary())
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    assert meta["classes"] == [3, 5, 8] and meta["backbone"]["vit"]["embed_dim"] == 16
    loaded = build_backbone(VIT.model_copy(update={"weights": path}), (1, 8, 8), seed=99)
    assert torch.equal(loaded(x[:5]), result.backbone(x[:5]))
    # a frozen-backbone learner picks the weights up from its config
    learner = create(
        "mvp",
        Problem((1, 8, 8), (10,)),
        {
            "backbone": {**VIT.model_dump(), "weights": str(path), "freeze": True},
            "g_prompt_layers": [0],
            "e_prompt_layers": [1],
        },
    )
    assert torch.equal(learner.vit.pos_embed, result.backbone.pos_embed)


def test_pretraining_is_deterministic_under_its_seed():
    x, y = blobs(64, [0, 1])
    config = PretrainConfig(epochs=1, batch_size=16, seed=4)
    a = pretrain(BackboneConfig(hidden=[8], out_dim=4), x.flatten(1), y, config).backbone
    b = pretrain(BackboneConfig(hidden=[8], out_dim=4), x.flatten(1), y, config).backbone
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
