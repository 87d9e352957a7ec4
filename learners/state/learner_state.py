"""A learner's checkpointable state: named tensors and JSON metadata, never pickles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LearnerState:
    """A learner's checkpointable state: tensors (saved with safetensors) and JSON metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
