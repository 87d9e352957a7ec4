"""The ViT backbone: shapes, image sizes, and a [CLS] feature that depends on the image."""

from __future__ import annotations

import pytest
import torch

from learners.backbones.backbone import BackboneConfig, BackboneError, build_backbone


def vit(shape, **options):
    return build_backbone(BackboneConfig(name="vit", vit=options), shape, seed=0)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 8, 8), (8, 8)])
def test_features_have_embed_dim_and_depend_on_the_image(shape):
    model = vit(shape, embed_dim=16, depth=2, num_heads=2)
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    features = model(x)
    assert features.shape == (4, 16) and model.out_dim == 16
    # an untrained ViT already separates images: features differ from image to image
    assert features.std(0).mean() > 0.02


def test_embed_gives_cls_then_patches():
    model = vit((1, 28, 28), patch_size=4, embed_dim=16, depth=1, num_heads=2)
    tokens = model.embed(torch.zeros(2, 1, 28, 28))
    assert tokens.shape == (2, 1 + 49, 16)
    assert torch.allclose(tokens[:, 0], model.cls_token[0, 0] + model.pos_embed[0, 0])


def test_patch_size_must_divide_the_image():
    with pytest.raises(BackboneError, match="patch_size 3 does not divide the 8x8"):
        vit((1, 8, 8), patch_size=3)
    with pytest.raises(BackboneError, match="image inputs"):
        vit((64,))


def test_same_seed_same_weights():
    a, b = vit((1, 8, 8), embed_dim=16, num_heads=2), vit((1, 8, 8), embed_dim=16, num_heads=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
