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

from stream.engine.restored_values import restored_integer


class SeenClasses:
    """Per level, a boolean mask of the classes the stream has shown."""

    def __init__(self, num_classes: Sequence[int]) -> None:
        self.masks = [np.zeros(int(k), dtype=bool) for k in num_classes]
        # 0 for seen classes, -inf for the others: masking scores is then one addition.
        self._bias = [np.full(int(k), -np.inf, dtype=np.float32) for k in num_classes]
        self._all = [False] * len(self.masks)
        # per score shape: masked-score buffers and row offsets, made once
        self._buffers: dict[tuple[tuple[int, ...], np.dtype], np.ndarray] = {}
        self._offsets: dict[tuple[int, int], np.ndarray] = {}

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

    def all_seen(self, level: int) -> bool:
        """Whether the stream has shown every class of ``level``."""
        return self._all[level]

    def mark(self, level: int, labels: np.ndarray) -> None:
        """The stream showed ``labels`` at ``level``."""
        seen = self.masks[level]
        if not seen[labels].all():
            seen[labels] = True
            self._bias[level][labels] = 0.0
            self._all[level] = bool(seen.all())

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
        such a row's argmax is 0); None when every row did, the usual case."""
        raw = scores.numpy(force=True)
        rows, classes = raw.shape
        if self._all[level]:
            masked = raw  # nothing to mask
        else:
            masked = self._scratch(raw.shape, raw.dtype)
            np.add(raw, self._bias[level], out=masked)
        return argmax_answered(masked, self._row_starts(rows, classes))

    def _scratch(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A buffer for masked scores, reused across batches of the same shape and dtype."""
        buffer = self._buffers.get((shape, dtype))
        if buffer is None:
            buffer = self._buffers[(shape, dtype)] = np.empty(shape, dtype)
        return buffer

    def _row_starts(self, rows: int, classes: int) -> np.ndarray:
        """Flat index of each row's first entry in a ``[rows, classes]`` array."""
        starts = self._offsets.get((rows, classes))
        if starts is None:
            starts = self._offsets[(rows, classes)] = np.arange(0, rows * classes, classes)
        return starts

    def state_dict(self) -> list[list[int]]:
        """The seen classes of each level, as JSON."""
        return [np.flatnonzero(mask).tolist() for mask in self.masks]

    def load_state_dict(self, state: list[list[int]]) -> None:
        """The classes of :meth:`state_dict`, each checked to lie in its level's label space
        (``ValueError``; a negative index would otherwise mark a class from the end)."""
        if not isinstance(state, list) or len(state) != len(self.masks):
            raise ValueError(f"seen classes: not a list of {len(self.masks)} levels")
        checked = []
        for level, (mask, classes) in enumerate(zip(self.masks, state, strict=True)):
            if not isinstance(classes, list) or len(classes) > len(mask):
                raise ValueError(f"seen classes of level {level}: not a list of its classes")
            where = f"seen classes of level {level}"
            checked.append([restored_integer(c, where, "class", 0, len(mask)) for c in classes])
        for level, (mask, classes) in enumerate(zip(self.masks, checked, strict=True)):
            mask[:] = False
            mask[np.asarray(classes, dtype=np.int64)] = True
            self._bias[level][:] = np.where(mask, 0.0, -np.inf)
        self._all = [bool(mask.all()) for mask in self.masks]


def argmax_answered(
    masked: np.ndarray, row_starts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's argmax of ``masked`` scores ``[rows, classes]`` and which rows it is above
    ``-inf`` in (None: every row). Reading each row's argmax entry back tells which at a
    fraction of a reduction over all scores; a NaN row is not answered either.
    ``row_starts``: the flat index of each row's first entry, when the caller keeps one."""
    rows, classes = masked.shape
    if row_starts is None:
        row_starts = np.arange(0, rows * classes, classes)
    predicted = masked.argmax(axis=1)
    answered = masked.reshape(-1)[predicted + row_starts] > -np.inf
    if answered.all():
        return predicted, None
    return predicted, answered
