"""Loading backbone weights: safetensors, torch state dicts and big_vision-layout npz ViTs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.weights import BackboneWeightsError, read_weights

VIT = {"patch_size": 4, "embed_dim": 8, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def vit_config(**update) -> BackboneConfig:
    return BackboneConfig.model_validate({"name": "vit", "vit": VIT, **update})


def images(n: int = 3, channels: int = 1, side: int = 8) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(0))


def test_safetensors_round_trip_gives_identical_features(tmp_path):
    source = build_backbone(vit_config(), (1, 8, 8), seed=1)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = build_backbone(vit_config(weights=tmp_path / "w.safetensors"), (1, 8, 8), seed=2)
    fresh = build_backbone(vit_config(), (1, 8, 8), seed=2)
    x = images()
    assert torch.equal(loaded(x), source(x))
    assert not torch.allclose(fresh(x), source(x))


def test_torch_state_dict_nested_and_wrapped_loads(tmp_path):
    source = build_backbone(BackboneConfig(hidden=[8], out_dim=4), (6,), seed=1)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "w.pt")
    loaded = build_backbone(
        BackboneConfig(hidden=[8], out_dim=4, weights=tmp_path / "w.pt"), (6,), 2
    )
    x = torch.randn(5, 6)
    assert torch.equal(loaded(x), source(x))


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(BackboneWeightsError, match=r"evil\.pt"):
        read_weights(tmp_path / "evil.pt")


def test_missing_file_and_misfit_weights_are_one_clear_error(tmp_path):
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        build_backbone(vit_config(weights=tmp_path / "nope.safetensors"), (1, 8, 8), 0)
    with pytest.raises(BackboneWeightsError, match="is not a regular file"):  # a directory
        build_backbone(vit_config(weights=tmp_path), (1, 8, 8), 0)
    other = build_backbone(BackboneConfig(hidden=[8], out_dim=4), (64,), seed=1)
    save_file(other.state_dict(), str(tmp_path / "mlp.safetensors"))
    with pytest.raises(BackboneWeightsError, match=r"mlp\.safetensors does not fit.*missing"):
        build_backbone(vit_config(weights=tmp_path / "mlp.safetensors"), (1, 8, 8), 0)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneWeightsError, match="cannot read"):
        read_weights(tmp_path / "junk.safetensors")


# -- the big_vision / vision_transformer npz layout ------------------------------------------


def random_npz(depth=2, dim=8, heads=2, mlp=16, patch=4, channels=1, grid=2, big_vision=False):
    """Arrays named and shaped as in google-research ViT checkpoints (jax conventions)."""
    rng = np.random.default_rng(0)
    r = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    hd = dim // heads
    w = {
        "embedding/kernel": r(patch, patch, channels, dim),  # HWIO
        "embedding/bias": r(dim),
        "cls": r(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": 1 + r(dim),
        "Transformer/encoder_norm/bias": r(dim),
        "head/kernel": r(dim, 5),
        "head/bias": r(5),
    }
    attn, mlp_name, ln2 = (
        ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1")
        if big_vision
        else ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    )
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        w[b + "LayerNorm_0/scale"], w[b + "LayerNorm_0/bias"] = 1 + r(dim), r(dim)
        w[b + ln2 + "/scale"], w[b + ln2 + "/bias"] = 1 + r(dim), r(dim)
        for n in ("query", "key", "value"):
            w[f"{b}{attn}/{n}/kernel"] = r(dim, heads, hd)
            w[f"{b}{attn}/{n}/bias"] = r(heads, hd)
        w[f"{b}{attn}/out/kernel"] = r(heads, hd, dim)
        w[f"{b}{attn}/out/bias"] = r(dim)
        w[f"{b}{mlp_name}/Dense_0/kernel"], w[f"{b}{mlp_name}/Dense_0/bias"] = r(dim, mlp), r(mlp)
        w[f"{b}{mlp_name}/Dense_1/kernel"], w[f"{b}{mlp_name}/Dense_1/bias"] = r(mlp, dim), r(dim)
    return w, (attn, mlp_name, ln2)


def reference_vit(w, names, x):
    """The ViT forward written directly on the jax-layout arrays (einsum over named axes)."""
    attn, mlp_name, ln2 = names
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    kernel = t["embedding/kernel"]
    p, dim = kernel.shape[0], kernel.shape[-1]
    B, C, H, W = x.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    tokens = torch.einsum("bghijc,ijcd->bghd", patches, kernel).reshape(B, -1, dim)
    tokens = tokens + t["embedding/bias"]
    tokens = torch.cat([t["cls"].expand(B, -1, -1), tokens], 1)
    tokens = tokens + t["Transformer/posembed_input/pos_embedding"]

    def ln(v, key):
        return F.layer_norm(v, (dim,), t[key + "scale"], t[key + "bias"], eps=1e-6)

    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in t:
        b = f"Transformer/encoderblock_{i}/"
        h = ln(tokens, b + "LayerNorm_0/")
        q, k, v = (
            torch.einsum("bnd,dhk->bnhk", h, t[f"{b}{attn}/{n}/kernel"]) + t[f"{b}{attn}/{n}/bias"]
            for n in ("query", "key", "value")
        )
        weights = torch.einsum("bnhk,bmhk->bhnm", q, k) / q.shape[-1] ** 0.5
        out = torch.einsum("bhnm,bmhk->bnhk", weights.softmax(-1), v)
        tokens = tokens + torch.einsum("bnhk,hkd->bnd", out, t[f"{b}{attn}/out/kernel"])
        tokens = tokens + t[f"{b}{attn}/out/bias"]
        h = ln(tokens, b + ln2 + "/")
        h = F.gelu(h @ t[f"{b}{mlp_name}/Dense_0/kernel"] + t[f"{b}{mlp_name}/Dense_0/bias"])
        tokens = tokens + h @ t[f"{b}{mlp_name}/Dense_1/kernel"] + t[f"{b}{mlp_name}/Dense_1/bias"]
        i += 1
    return ln(tokens, "Transformer/encoder_norm/")[:, 0]


@pytest.mark.parametrize("big_vision", [False, True], ids=["vision_transformer", "big_vision"])
def test_npz_vit_maps_onto_the_vit_exactly(tmp_path, big_vision):
    w, names = random_npz(big_vision=big_vision)
    np.savez(tmp_path / "vit.npz", **w)
    vit = build_backbone(vit_config(weights=tmp_path / "vit.npz"), (1, 8, 8), seed=0)
    x = images()
    torch.testing.assert_close(vit(x), reference_vit(w, names, x), rtol=1e-4, atol=1e-5)


def test_npz_with_prefix_resampled_grid_and_rgb_kernel_loads(tmp_path):
    w, _ = random_npz(channels=3, grid=4)  # a 16x16 RGB checkpoint
    np.savez(tmp_path / "vit.npz", **{f"opt/target/{k}": v for k, v in w.items()})
    vit = build_backbone(vit_config(weights=tmp_path / "vit.npz"), (1, 8, 8), seed=0)
    kernel = torch.from_numpy(w["embedding/kernel"]).permute(3, 2, 0, 1)
    assert torch.allclose(vit.patch_embed.proj.weight, kernel.sum(1, keepdim=True))
    assert vit.pos_embed.shape == (1, 5, 8)
    cls_pos = torch.from_numpy(w["Transformer/posembed_input/pos_embedding"][:, :1])
    assert torch.equal(vit.pos_embed[:, :1], cls_pos)


def test_npz_without_cls_token_or_vit_keys_is_refused(tmp_path):
    w, _ = random_npz()
    del w["cls"]
    np.savez(tmp_path / "gap.npz", **w)
    with pytest.raises(BackboneWeightsError, match=r"\[CLS\]"):
        read_weights(tmp_path / "gap.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(BackboneWeightsError, match="not a ViT npz"):
        read_weights(tmp_path / "other.npz")


def _malformed_weights(tmp_path, kind):
    if kind == "empty.pt":
        (tmp_path / kind).write_bytes(b"")
    elif kind == "text.pt":
        (tmp_path / kind).write_text("example text, not a torch file\n")
    elif kind == "junk.npz":
        (tmp_path / kind).write_bytes(b"PK\x03\x04junk")
    elif kind == "pos1d.safetensors":
        state = build_backbone(vit_config(), (1, 8, 8), seed=1).state_dict()
        state["pos_embed"] = torch.zeros(8)  # as wide as the embedding: used to IndexError
        save_file(state, str(tmp_path / kind))
    elif kind == "qkv1d.npz":
        w, (attn, _, _) = random_npz()
        for n in ("query", "key", "value"):
            w[f"Transformer/encoderblock_0/{attn}/{n}/kernel"] = np.zeros(8, np.float32)
        np.savez(tmp_path / kind, **w)
    return tmp_path / kind


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty.pt", "is empty"),
        ("text.pt", r"cannot read backbone weights .* as a torch state dict"),
        ("junk.npz", "as an npz ViT checkpoint: BadZipFile"),
        ("pos1d.safetensors", r"does not fit the configured backbone: shape pos_embed \(8,\)"),
        ("qkv1d.npz", "as an npz ViT checkpoint: IndexError"),
    ],
)
def test_a_malformed_weights_file_is_one_error_naming_it(tmp_path, kind, message):
    """Each of these ended in a raw EOFError, KeyError, BadZipFile or IndexError (exit 1)."""
    path = _malformed_weights(tmp_path, kind)
    with pytest.raises(BackboneWeightsError, match=message) as caught:
        build_backbone(vit_config(weights=path), (1, 8, 8), seed=0)
    assert str(path) in str(caught.value)


def test_an_npz_declaring_more_than_memory_is_refused_before_decompressing(tmp_path, monkeypatch):
    import learners.backbones.weights as weights

    w, _ = random_npz()
    np.savez(tmp_path / "vit.npz", **w)
    monkeypatch.setattr(weights, "memory_bytes", lambda device: 1000)
    with pytest.raises(BackboneWeightsError, match=r"vit\.npz: its arrays take \d+ bytes"):
        read_weights(tmp_path / "vit.npz")


MLP = BackboneConfig(hidden=[8], out_dim=4)


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        (float("nan"), torch.float32, "holds NaN or infinite values$"),
        (float("inf"), torch.float32, "holds NaN or infinite values$"),
        (1e300, torch.float64, "holds NaN or infinite values once cast from float64 to float32"),
    ],
)
def test_non_finite_weights_are_refused(tmp_path, value, dtype, message):
    """NaN weights loaded silently: a replay on them exited 0 with all-zero results."""
    state = build_backbone(MLP, (6,), seed=1).state_dict()
    key = next(iter(state))
    state[key] = state[key].to(dtype)
    state[key][0, 0] = value
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        BackboneWeightsError, match=rf"w\.safetensors: tensor {re.escape(key)} {message}"
    ):
        build_backbone(MLP.model_copy(update={"weights": tmp_path / "w.safetensors"}), (6,), 2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_weights_that_are_not_floating_point_are_refused(tmp_path, dtype):
    """An integer or bool tensor was cast to float without a word: a useless backbone."""
    state = build_backbone(MLP, (6,), seed=1).state_dict()
    key = next(iter(state))
    state[key] = (3 * state[key]).to(dtype)
    torch.save(state, tmp_path / "w.pt")
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(
        BackboneWeightsError, match=rf"w\.pt: tensor {re.escape(key)} is {name}, not float"
    ):
        build_backbone(MLP.model_copy(update={"weights": tmp_path / "w.pt"}), (6,), 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_weights_of_another_float_precision_are_cast(tmp_path, dtype):
    source = build_backbone(MLP, (6,), seed=1)
    state = {k: v.to(dtype) for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = build_backbone(MLP.model_copy(update={"weights": tmp_path / "w.safetensors"}), (6,), 2)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float())


def test_an_npz_array_that_is_not_floating_point_is_refused(tmp_path):
    w, _ = random_npz()
    w["cls"] = np.ones_like(w["cls"], dtype=np.int32)
    np.savez(tmp_path / "vit.npz", **w)
    with pytest.raises(BackboneWeightsError, match=r"vit\.npz: tensor cls is int32, not float"):
        read_weights(tmp_path / "vit.npz")
