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

    ``task`` is for task-end metrics only; learners never see it (``task_id``, when set, is its
    first value as an int). ``validated`` says the source has already checked the samples
    against the problem (the recorded-stream source checks a whole stream once, the daemon's
    decoder each message), so the loop need not check again.
    """

    x: torch.Tensor
    y: torch.Tensor
    level: torch.Tensor
    task: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    validated: bool = False
    task_id: int | None = None

    def first_task(self) -> int | None:
        """The task of the batch's first sample (a batch never spans two tasks): ``task_id``
        where the source gave it (the recorded-stream source reads every batch's at once:
        reading one element of a tensor between a small learner's calls costs more than the
        rest of the loop's bookkeeping), else read from ``task``."""
        if self.task_id is not None:
            return self.task_id
        return None if self.task is None else int(self.task.numpy()[0])

    def __len__(self) -> int:
        return len(self.y)
