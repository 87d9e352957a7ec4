"""Pretraining a backbone and saving it so that learners load it through backbone.weights."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.pretrain import (
    METADATA_KEY,
    PretrainConfig,
    PretrainDiverged,
    PretrainError,
    pretrain,
    save_backbone,
)
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
    old = os.umask(0o022)
    try:
        path = save_backbone(result.backbone, VIT, tmp_path / "vit.safetensors", result.summary())
    finally:
        os.umask(old)
    # readable by a daemon running as another user (safetensors' save_file made it 0600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit.safetensors"]
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


MLP = BackboneConfig(hidden=[8], out_dim=4)


def test_test_accuracy_counts_only_the_classes_trained_on():
    # test classes 0 and 8 are not in the training sample: 8 was an IndexError, 0 was scored
    # against a head row that does not exist (always wrong)
    x, y = blobs(64, [3, 5])
    tx, ty = blobs(60, [0, 3, 5, 8], 1)
    result = pretrain(MLP, x.flatten(1), y, PretrainConfig(epochs=1), test=(tx.flatten(1), ty))
    known = (ty == 3) | (ty == 5)
    assert result.test_samples == int(known.sum()) < len(ty)
    assert result.summary()["test_samples"] == result.test_samples
    alone = pretrain(
        MLP, x.flatten(1), y, PretrainConfig(epochs=1), test=(tx[known].flatten(1), ty[known])
    )
    assert result.test_accuracy == alone.test_accuracy
    unknown = pretrain(
        MLP, x.flatten(1), y, PretrainConfig(epochs=1), test=(tx[~known].flatten(1), ty[~known])
    )
    assert unknown.test_accuracy is None and unknown.test_samples == 0


def test_fewer_than_two_classes_is_refused():
    x, y = blobs(16, [4])
    with pytest.raises(PretrainError, match="1 class"):
        pretrain(MLP, x.flatten(1), y, PretrainConfig(epochs=1))


@pytest.mark.parametrize(("lr", "epoch"), [(1e30, 1), (1e6, 2)])
def test_divergence_is_one_error_and_no_backbone(lr, epoch):
    x, y = blobs(64, [0, 1])
    with pytest.raises(PretrainDiverged, match=rf"loss nan at epoch {epoch}\)") as caught:
        pretrain(MLP, x.flatten(1), y, PretrainConfig(epochs=2, batch_size=16, lr=lr))
    assert caught.value.epoch == epoch and caught.value.what == "loss nan"


@pytest.mark.parametrize(
    "options", [{"lr": math.inf}, {"lr": math.nan}, {"weight_decay": math.inf}]
)
def test_non_finite_options_are_refused(options):
    with pytest.raises(ValidationError, match="finite number"):
        PretrainConfig(**options)


def test_weights_broken_by_the_last_step_are_divergence(monkeypatch):
    # one step per epoch: its loss is computed before the step that breaks the weights
    step = torch.optim.AdamW.step

    def breaking_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(math.inf)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", breaking_step)
    x, y = blobs(16, [0, 1])
    with pytest.raises(PretrainDiverged, match=r"non-finite weights at epoch 1\)"):
        pretrain(MLP, x.flatten(1), y, PretrainConfig(epochs=1, batch_size=16))
