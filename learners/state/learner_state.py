"""A learner's checkpointable state: named tensors and JSON metadata, never pickles.

It is the one form of state in ``learners/`` and ``memory/``: a learner, a memory, a ridge head
or a set of class moments each gives a ``state_dict()`` and takes it back with
``load_state_dict()``. A whole nests its parts with :meth:`LearnerState.put` and reads them
back with :meth:`LearnerState.part`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LearnerState:
    """A learner's checkpointable state: tensors (saved with safetensors) and JSON metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: str = field(default="", compare=False)
    """Where this part sits in the whole (``heads.0.``), for error messages."""

    def put(self, prefix: str, part: LearnerState) -> None:
        """Nest ``part`` under ``prefix``: its tensors as ``prefix.name``, its metadata (when it
        has any) as ``meta[prefix]``."""
        self.tensors.update({f"{prefix}.{name}": value for name, value in part.tensors.items()})
        if part.meta:
            self.meta[prefix] = part.meta

    def part(self, prefix: str) -> LearnerState:
        """The state :meth:`put` nested under ``prefix``."""
        head = f"{prefix}."
        tensors = {k[len(head) :]: v for k, v in self.tensors.items() if k.startswith(head)}
        return LearnerState(tensors, self.meta.get(prefix, {}), f"{self.prefix}{head}")

    def expect(
        self, name: str, shape: Sequence[int], dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Tensor ``name``, for a ``load_state_dict``: a ``ValueError`` naming it unless it has
        ``shape`` (and ``dtype``), a ``KeyError`` if it is missing. A checkpoint is outside
        bytes; a tensor of another shape would otherwise fail, or be misread, only when first
        used, long after the restore that could have refused it."""
        tensor = self.tensors.get(name)
        where = f"{self.prefix}{name}"
        if tensor is None:
            raise KeyError(f"the state has no tensor {where!r}")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"tensor {where!r} has shape {tuple(tensor.shape)}, this learner's is "
                f"{tuple(shape)}"
            )
        if dtype is not None and tensor.dtype != dtype:
            raise ValueError(f"tensor {where!r} is {tensor.dtype}, this learner's is {dtype}")
        return tensor


def non_finite(state: LearnerState) -> str | None:
    """Which part of ``state`` holds NaN or inf (None: all finite)."""
    for name, tensor in state.tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not _all_finite(tensor):
            return f"tensor {name!r} holds NaN or inf"
    try:
        json.dumps(state.meta, allow_nan=False)
    except ValueError:
        return "state metadata holds NaN or inf"
    return None


def _all_finite(tensor: torch.Tensor) -> bool:
    """One reduction in the usual case instead of a boolean tensor the size of the state: a
    NaN or inf makes the float64 sum non-finite, and a float64 sum of float32 values cannot
    overflow. A sum of large float64 values can, so a non-finite sum is checked element-wise."""
    if not tensor.numel():
        return True
    wide = torch.complex128 if tensor.is_complex() else torch.float64
    if bool(torch.isfinite(tensor.detach().sum(dtype=wide))):
        return True
    return bool(torch.isfinite(tensor).all())
