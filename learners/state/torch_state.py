"""Flattening torch modules and optimizers into the tensors + JSON of a ``LearnerState``.

Checkpoints hold only tensors (safetensors) and JSON, never pickles, so optimizer state — a
nested dict of tensors and numbers — is split here into named tensors and a JSON skeleton.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learners.state.learner_state import LearnerState


def module_state(module: nn.Module) -> LearnerState:
    """``module``'s parameters and buffers, on CPU."""
    return LearnerState({key: value.detach().cpu() for key, value in module.state_dict().items()})


def load_module_state(module: nn.Module, state: LearnerState) -> None:
    """Load a state made by :func:`module_state` into ``module``."""
    module.load_state_dict(state.tensors)


def optimizer_state(optimizer: torch.optim.Optimizer) -> LearnerState:
    """``optimizer.state_dict()`` split into named tensors and a JSON-able skeleton."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param_id, entries in state["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().cpu()
                plain[key] = None
            else:
                plain[key] = value
        skeleton["state"][str(param_id)] = plain
    return LearnerState(tensors, skeleton)


IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
"""Optimizer options that choose how an update is computed, not what it computes: a restored
optimizer keeps the running code's (a checkpoint from before Adam ran ``fused`` would
otherwise switch it back to ``foreach``)."""


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: LearnerState) -> None:
    """Inverse of :func:`optimizer_state`, except the :data:`IMPLEMENTATION_FLAGS`, which stay
    ``optimizer``'s."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    entries_of: dict[int, dict[str, Any]] = {}
    for param_id, entries in state.meta["state"].items():
        index = int(param_id)
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index} of {len(params)}")
        entries_of[index] = {
            key: _param_state(state, f"{param_id}.{key}", params[index]) if value is None else value
            for key, value in entries.items()
        }
    groups = state.meta["param_groups"]
    if isinstance(groups, list) and len(groups) == len(optimizer.param_groups):
        groups = [
            {**saved, **{k: live[k] for k in IMPLEMENTATION_FLAGS if k in live}}
            if isinstance(saved, dict)
            else saved
            for saved, live in zip(groups, optimizer.param_groups, strict=True)
        ]
    optimizer.load_state_dict({"state": entries_of, "param_groups": groups})


def _param_state(state: LearnerState, name: str, param: torch.Tensor) -> torch.Tensor:
    """An optimizer's per-parameter tensor: a scalar (Adam's step) or one of the parameter's
    shape (moments, momentum), refused otherwise: the optimizer would not check it, and a
    fused step reads it by the parameter's size."""
    tensor = state.tensors.get(name)
    if tensor is None:
        raise KeyError(f"the state has no tensor {state.prefix}{name!r}")
    if tensor.dim() == 0:
        return tensor
    return state.expect(name, param.shape)
