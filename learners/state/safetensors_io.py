"""A ``LearnerState`` as bytes: safetensors for the tensors, JSON in its metadata, no pickle."""

from __future__ import annotations

import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from learners.state.learner_state import LearnerState

_META_KEY = "streamcl.meta"


def state_to_bytes(state: LearnerState) -> bytes:
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in state.tensors.items()}
    return save_tensors(tensors, metadata={_META_KEY: json.dumps(state.meta, allow_nan=False)})


def state_from_bytes(data: bytes) -> LearnerState:
    """The state in ``data``; ``ValueError`` when the bytes are not safetensors (truncated, a
    pickle, a forged header length): safetensors' own error derives from ``Exception`` only,
    and callers refuse bad files by ``ValueError``."""
    try:
        tensors: dict[str, torch.Tensor] = load_tensors(data)
    except SafetensorError as exc:
        raise ValueError(f"not a safetensors file ({exc})") from None
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    meta = json.loads(header.get("__metadata__", {}).get(_META_KEY, "{}"))
    return LearnerState(tensors, meta)
