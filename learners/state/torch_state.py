"""Flattening torch modules and optimizers into the tensors + JSON of a ``LearnerState``.

Checkpoints hold only tensors (safetensors) and JSON, never pickles, so optimizer state — a
nested dict of tensors and numbers — is split here into named tensors and a JSON skeleton.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with keys under ``prefix.``, on CPU."""
    return {f"{prefix}.{key}": value.detach().cpu() for key, value in module.state_dict().items()}


def load_module_tensors(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the tensors stored by :func:`module_tensors` under ``prefix`` into ``module``."""
    head = f"{prefix}."
    module.load_state_dict({k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)})


def optimizer_state(
    prefix: str, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able skeleton."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param_id, entries in state["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param_id}.{key}"] = value.detach().cpu()
                plain[key] = None
            else:
                plain[key] = value
        skeleton["state"][str(param_id)] = plain
    return tensors, skeleton


def load_optimizer_state(
    prefix: str,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    skeleton: dict[str, Any],
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for param_id, entries in skeleton["state"].items():
        state[int(param_id)] = {
            key: tensors[f"{prefix}.{param_id}.{key}"] if value is None else value
            for key, value in entries.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": skeleton["param_groups"]})
