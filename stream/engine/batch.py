"""The micro-batch that flows from a source through the event loop to a learner."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Origins = tuple[np.ndarray, np.ndarray]
"""Where each sample of a batch came from: the partition and the offset of its message, as two
int64 arrays (-1 where the caller has none): what a rejected batch is dead-lettered by."""


@dataclass
class Batch:
    """Samples learned together, as CPU tensors (learners move them to their device).

    ``task`` is for task-end metrics only; learners never see it. ``validated`` says the source
    has already checked the samples against the problem (the recorded-stream source checks a
    whole stream once, the daemon's decoder each message), so the loop need not check again.
    """

    x: torch.Tensor
    y: torch.Tensor
    level: torch.Tensor
    task: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    validated: bool = False

    def __len__(self) -> int:
        return len(self.y)
