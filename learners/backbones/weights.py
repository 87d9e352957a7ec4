"""Loading backbone weights from a file the user names; nothing is ever downloaded.

Three formats, chosen by the file's suffix:

- ``.safetensors`` — a flat tensor map (what ``streamcl pretrain`` writes);
- ``.npz`` — ViT weights in the google-research ``vision_transformer`` / big_vision layout
  (``embedding/kernel``, ``cls``, ``Transformer/encoderblock_N/...``), the layout timm's
  ``_load_weights`` reads; mapped onto timm's names, which :class:`learners.backbones.vit.ViT` uses;
- anything else — a torch state dict read with ``torch.load(weights_only=True)`` (no pickled
  code runs), optionally nested under ``state_dict`` / ``model``.

A weights file is outside bytes: whatever it holds that cannot be read or does not fit (an
empty or foreign file, a broken zip, a tensor of another rank) is one
:class:`BackboneWeightsError` naming the file and what is wrong, never a raw exception; an
``.npz`` is refused before any member is decompressed when its members would not fit in memory.

Keys under ``module.`` or ``backbone.`` are unwrapped; classifier keys (``head``, ``fc_norm``,
``pre_logits``) that the backbone does not have are ignored, since streamcl learners bring their
own heads. A ViT whose image grid differs from the checkpoint's gets its position embeddings
resampled (bicubic, as timm does) and an RGB patch embedding summed to one channel for grey
images. Any other missing, extra or mis-shaped tensor is one error that names the file and keys.

Floating-point tensors of another precision (float16, float64, ...) are cast to the parameter's
dtype; an integer, bool or complex tensor for a floating-point parameter is refused, as is a
tensor holding NaN or infinity (after the cast: a float64 beyond float32's range is one) —
either would give a backbone whose features are useless.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from learners.machine_memory import memory_bytes

# Checkpoint keys a feature extractor does not need: classifier heads and their pre-layers.
_HEAD_PREFIXES = ("head.", "fc_norm.", "pre_logits.")
_WRAPPER_PREFIXES = ("module.", "backbone.")


class BackboneWeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the configured backbone."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors stored in ``path``, under timm-style names for ``.npz`` ViT checkpoints."""
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise BackboneWeightsError(f"backbone weights file {path} {what}")
    read_as = {".safetensors": "safetensors", ".npz": "an npz ViT checkpoint"}.get(
        path.suffix, "a torch state dict (torch.load, weights only)"
    )
    try:
        if path.stat().st_size == 0:
            raise BackboneWeightsError(f"backbone weights file {path} is empty")
        if path.suffix == ".safetensors":
            return dict(load_file(str(path)))
        if path.suffix == ".npz":
            _refuse_npz_beyond_memory(path)
            with np.load(path, allow_pickle=False) as npz:
                return npz_vit_state(dict(npz.items()), str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except BackboneWeightsError:
        raise
    except Exception as exc:  # a foreign or broken file fails in many ways
        raise BackboneWeightsError(
            f"cannot read backbone weights {path} as {read_as}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    return _state_from_torch(loaded, path)


def _refuse_npz_beyond_memory(path: Path) -> None:
    """Refuse an ``.npz`` whose members, decompressed, would not fit in this machine's memory
    (a zip of a few KiB can declare gigabytes), before any is decompressed."""
    with zipfile.ZipFile(path) as archive:
        declared = sum(member.file_size for member in archive.infolist())
    limit = memory_bytes(torch.device("cpu"))
    if limit is not None and declared > limit:
        raise BackboneWeightsError(
            f"{path}: its arrays take {declared} bytes decompressed, more than this "
            f"machine's memory ({limit} bytes)"
        )


def _state_from_torch(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise BackboneWeightsError(
            f"{path}: expected a state dict (names to tensors), got {type(loaded).__name__}"
        )
    return dict(loaded)


def npz_vit_state(w: dict[str, np.ndarray], where: str) -> dict[str, torch.Tensor]:
    """Map a ``vision_transformer`` / big_vision ``.npz`` ViT onto timm's parameter names."""
    prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in w), None)
    if prefix is None:
        raise BackboneWeightsError(f"{where}: not a ViT npz checkpoint (no embedding/kernel)")

    def get(key: str) -> torch.Tensor:
        if prefix + key not in w:
            raise BackboneWeightsError(f"{where}: npz checkpoint has no {prefix}{key}")
        if not np.issubdtype(w[prefix + key].dtype, np.floating):
            raise BackboneWeightsError(
                f"{where}: tensor {prefix}{key} is {w[prefix + key].dtype}, not floating point"
            )
        return torch.from_numpy(np.asarray(w[prefix + key], dtype=np.float32))

    if prefix + "cls" not in w:
        raise BackboneWeightsError(
            f"{where}: the npz ViT has no [CLS] token (a global-average-pool model); "
            "streamcl's vit reads features from [CLS]"
        )
    pos_key = next(
        (
            k
            for k in ("Transformer/posembed_input/pos_embedding", "pos_embedding")
            if prefix + k in w
        ),
        "Transformer/posembed_input/pos_embedding",
    )
    state = {
        "patch_embed.proj.weight": get("embedding/kernel").permute(3, 2, 0, 1),  # HWIO -> OIHW
        "patch_embed.proj.bias": get("embedding/bias"),
        "cls_token": get("cls").reshape(1, 1, -1),
        "pos_embed": get(pos_key).reshape(1, -1, get("embedding/bias").numel()),
        "norm.weight": get("Transformer/encoder_norm/scale"),
        "norm.bias": get("Transformer/encoder_norm/bias"),
    }
    depth = 0
    while f"{prefix}Transformer/encoderblock_{depth}/LayerNorm_0/scale" in w:
        depth += 1
    for i in range(depth):
        bp = f"Transformer/encoderblock_{i}/"
        # vision_transformer names the sub-layers LayerNorm_0, MHDPA_1, LayerNorm_2, MlpBlock_3;
        # big_vision numbers them per kind: LayerNorm_0/1, MHDPA_0, MlpBlock_0.
        classic = f"{prefix}{bp}MlpBlock_3/Dense_0/kernel" in w
        attn = bp + (
            "MultiHeadDotProductAttention_1/" if classic else "MultiHeadDotProductAttention_0/"
        )
        mlp = bp + ("MlpBlock_3/" if classic else "MlpBlock_0/")
        ln2 = bp + ("LayerNorm_2/" if classic else "LayerNorm_1/")
        b = f"blocks.{i}."
        state[b + "norm1.weight"] = get(bp + "LayerNorm_0/scale")
        state[b + "norm1.bias"] = get(bp + "LayerNorm_0/bias")
        state[b + "norm2.weight"] = get(ln2 + "scale")
        state[b + "norm2.bias"] = get(ln2 + "bias")
        # query/key/value kernels are [D, heads, head_dim]; torch wants [heads*head_dim, D].
        state[b + "attn.qkv.weight"] = torch.cat(
            [get(f"{attn}{n}/kernel").flatten(1).T for n in ("query", "key", "value")]
        )
        state[b + "attn.qkv.bias"] = torch.cat(
            [get(f"{attn}{n}/bias").reshape(-1) for n in ("query", "key", "value")]
        )
        # out kernel is [heads, head_dim, D]; torch wants [D, heads*head_dim].
        state[b + "attn.proj.weight"] = get(attn + "out/kernel").flatten(0, 1).T
        state[b + "attn.proj.bias"] = get(attn + "out/bias")
        for r in range(2):
            state[b + f"mlp.fc{r + 1}.weight"] = get(f"{mlp}Dense_{r}/kernel").T
            state[b + f"mlp.fc{r + 1}.bias"] = get(f"{mlp}Dense_{r}/bias")
    return {k: v.contiguous() for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load the weights in ``path`` into ``backbone``, adapting a ViT's grid and channels."""
    try:
        _load_backbone_weights(backbone, path)
    except BackboneWeightsError:
        raise
    except Exception as exc:  # a tensor of another rank fails the adaptation in many ways
        raise BackboneWeightsError(
            f"{path} does not fit the configured backbone: {type(exc).__name__}: {exc}"
        ) from None


def _load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    state = _unwrap(read_weights(path))
    expected = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(_HEAD_PREFIXES)}
    for k, v in state.items():
        if k in expected and expected[k].is_floating_point() and not v.is_floating_point():
            raise BackboneWeightsError(f"{path}: tensor {k} is {_dtype(v)}, not floating point")
    if "pos_embed" in state and "pos_embed" in expected:
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], expected["pos_embed"].shape)
    proj = "patch_embed.proj.weight"
    if proj in state and proj in expected and state[proj].shape[1] != expected[proj].shape[1]:
        if expected[proj].shape[1] != 1:
            raise BackboneWeightsError(
                f"{path}: patch embedding takes {state[proj].shape[1]} channels, "
                f"the images have {expected[proj].shape[1]}"
            )
        state[proj] = state[proj].sum(dim=1, keepdim=True)  # RGB -> grey, as timm adapts convs
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if wrong:
        problems.append(f"shape {_few(wrong)}")
    if problems:
        raise BackboneWeightsError(
            f"{path} does not fit the configured backbone: " + "; ".join(problems)
        )
    cast = {k: v.to(expected[k].dtype) for k, v in state.items()}
    for k, v in cast.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            overflow = bool(torch.isfinite(state[k]).all())  # finite until cast
            raise BackboneWeightsError(
                f"{path}: tensor {k} holds NaN or infinite values"
                + (f" once cast from {_dtype(state[k])} to {_dtype(v)}" if overflow else "")
            )
    backbone.load_state_dict(cast)


def _unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def resample_pos_embed(pos: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Position embeddings ``[1, 1 + g*g, D]`` resampled to ``shape`` (``[CLS]`` kept as is).

    Only a square grid can be resampled; any other mismatch is left for the shape check.
    """
    if pos.shape == shape or pos.dim() != len(shape) or pos.shape[-1] != shape[-1]:
        return pos
    old, new = pos.shape[1] - 1, shape[1] - 1
    old_side, new_side = math.isqrt(old), math.isqrt(new)
    if old_side**2 != old or new_side**2 != new:
        return pos
    grid = pos[:, 1:].reshape(1, old_side, old_side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new, -1)], dim=1)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _few(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
