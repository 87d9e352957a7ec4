"""The classes the stream has shown so far, per level, and the one place scores are masked to them.

Learners say only what they were taught (untaught classes score ``-inf``, see
:mod:`learners.base`). Which classes count is the engine's rule, owned here: both the prequential
accuracy of the event loop and the anytime evaluation (``stream/engine/evaluation.py``) predict
the argmax over the classes seen in the stream, as the i-Blurry / Si-Blurry code masks its logits
to the classes it has exposed. Bookkeeping runs in numpy: cheaper per call than torch on
micro-batches, and the loop masks every batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch


class SeenClasses:
    """Per level, a boolean mask of the classes the stream has shown."""

    def __init__(self, num_classes: Sequence[int]) -> None:
        self.masks = [np.zeros(int(k), dtype=bool) for k in num_classes]
        # 0 for seen classes, -inf for the others: masking scores is then one addition.
        self._bias = [np.full(int(k), -np.inf, dtype=np.float32) for k in num_classes]
        self._all = [False] * len(self.masks)
        self._any = [False] * len(self.masks)

    @classmethod
    def from_masks(cls, masks: Iterable[np.ndarray | torch.Tensor]) -> SeenClasses:
        """The seen classes given as one boolean mask per level."""
        arrays = [m.numpy(force=True) if isinstance(m, torch.Tensor) else m for m in masks]
        seen = cls([len(m) for m in arrays])
        for level, mask in enumerate(arrays):
            seen.mark(level, np.flatnonzero(mask))
        return seen

    def __getitem__(self, level: int) -> np.ndarray:
        return self.masks[level]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def mark(self, level: int, labels: np.ndarray) -> None:
        """The stream showed ``labels`` at ``level``."""
        seen = self.masks[level]
        if not seen[labels].all():
            seen[labels] = True
            self._bias[level][labels] = 0.0
            self._all[level] = bool(seen.all())
            self._any[level] = True

    def mark_batch(self, y: np.ndarray, levels: np.ndarray) -> None:
        """The stream showed a batch labelled ``y`` at the per-sample ``levels``."""
        if len(self.masks) == 1:
            if not self._all[0]:
                self.mark(0, y)
            return
        for level in range(len(self.masks)):
            self.mark(level, y[levels == level])

    def masked(self, scores: torch.Tensor, level: int) -> np.ndarray:
        """``scores`` with the classes not seen at ``level`` at ``-inf`` (a served prediction,
        stream/engine/serving.py, is its argmax)."""
        raw = scores.numpy(force=True)
        return raw if self._all[level] else raw + self._bias[level]

    def argmax(self, scores: torch.Tensor, level: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The predicted class of each row among the seen classes, and which rows scored some
        seen class above ``-inf`` (a learner that knows no seen class yet makes no prediction;
        such a row's argmax is 0); None when every row did, the usual case, told by one
        reduction over the raw scores."""
        raw = scores.numpy(force=True)
        if self._all[level]:
            masked, some_seen = raw, True  # nothing to mask
        else:
            masked, some_seen = raw + self._bias[level], self._any[level]
        predicted = masked.argmax(axis=1)
        if some_seen and raw.min() > -np.inf:  # (a NaN fails this too)
            return predicted, None
        # a row scored -inf throughout has its argmax at -inf; reading the argmax entries back
        # costs a fraction of a row-wise max
        rows, classes = masked.shape
        answered = masked.reshape(-1)[predicted + np.arange(0, rows * classes, classes)] > -np.inf
        return predicted, answered

    def state_dict(self) -> list[list[int]]:
        """The seen classes of each level, as JSON."""
        return [np.flatnonzero(mask).tolist() for mask in self.masks]

    def load_state_dict(self, state: list[list[int]]) -> None:
        for level, (mask, classes) in enumerate(zip(self.masks, state, strict=True)):
            mask[:] = False
            mask[np.asarray(classes, dtype=np.int64)] = True
            self._bias[level][:] = np.where(mask, 0.0, -np.inf)
        self._all = [bool(mask.all()) for mask in self.masks]
        self._any = [bool(mask.any()) for mask in self.masks]
