"""Prequential accuracy and seen-class marks of a run of micro-batches, counted in one go.

Per micro-batch the event loop needs the learner's scores (taken before it learns the batch),
the argmax over the classes seen before the batch, the hits, a ring-buffer update and the marks
of the batch's classes: about a dozen numpy calls on a few kilobytes. Between the calls of a
small learner such as ``nmc`` each costs several times what it costs alone (measured in
bench/engine_overhead.py: together they took a quarter of the loop's time). When nothing
reads them batch by batch (no drift detector, no observer that reads hits), the loop instead
copies each batch's scores and labels here and counts a run of batches at once, with the same
result:

- each row's prediction is the argmax over the classes seen before *its* batch: the unmasked
  argmax of the run, wherever that class was seen by the row's batch and the row holds no NaN
  or +inf (then masking changes no maximum); the few other rows are masked with their own
  batch's mask and reduced with the arithmetic of :meth:`SeenClasses.argmax`;
- hits go into :class:`~stream.engine.metrics.PrequentialAccuracy` in stream order, whose state
  does not depend on how they are cut into calls; the classes are marked as each batch would.

Anything that reads the seen classes or the prequential accuracy (an evaluation, a checkpoint,
a summary, a served prediction) makes the loop :meth:`~DeferredPrequential.flush` first.
Single-level problems only: a hierarchy predicts level by level.
"""

from __future__ import annotations

import numpy as np
import torch

from stream.engine.metrics import PrequentialAccuracy
from stream.engine.seen_classes import SeenClasses, argmax_answered

# Rows kept before counting: enough to spread the per-run calls over many batches, little
# enough (with the byte cap) that a run's scores stay in cache.
MAX_ROWS = 1024
MAX_BYTES = 1 << 20


class DeferredPrequential:
    """Scores and labels of the batches not counted yet, for level 0 of ``seen``."""

    def __init__(
        self, seen: SeenClasses, prequential: PrequentialAccuracy, num_classes: int
    ) -> None:
        self.seen = seen
        self.prequential = prequential
        self.capacity = max(1, min(MAX_ROWS, MAX_BYTES // (4 * num_classes)))
        self._scores: torch.Tensor | None = None
        self._layout: tuple[torch.dtype, int] | None = None  # the buffer's dtype and columns
        self._labels = np.empty(self.capacity, dtype=np.int64)
        # flat index of each row's first score
        self._row_starts = np.arange(0, self.capacity * num_classes, num_classes)
        self._ends: list[int] = []  # where each batch's rows end
        self.rows = 0

    def add(self, scores: torch.Tensor, y: np.ndarray) -> None:
        """Keep one batch's scores ``[B, C]`` (copied: the learner may reuse its tensor) and
        labels ``[B]``; ``B`` at most :attr:`capacity`."""
        start = self.rows
        end = start + len(y)
        buffer = self._scores
        layout = (scores.dtype, scores.shape[1])
        if buffer is None or layout != self._layout:
            self.flush()
            start, end = 0, len(y)
            buffer = self._scores = torch.empty(
                (self.capacity, layout[1]), dtype=layout[0], device=scores.device
            )
            self._layout = layout
        elif end > self.capacity:
            self.flush()
            start, end = 0, len(y)
        buffer[start:end] = scores.detach() if scores.requires_grad else scores
        self._labels[start:end] = y
        self._ends.append(end)
        self.rows = end

    def flush(self) -> None:
        """Count every kept batch, in stream order, and forget them."""
        rows = self.rows
        if not rows:
            return
        assert self._scores is not None
        raw = self._scores[:rows].numpy(force=True)
        labels = self._labels[:rows]
        predicted = raw.argmax(axis=1)
        top = raw.reshape(-1)[predicted + self._row_starts[:rows]]
        answered = top > -np.inf
        seen = self.seen
        if not seen.all_seen(0):
            # the unmasked argmax stands where its class was seen and no NaN or +inf is in the
            # row (masking turns +inf into NaN, which an argmax picks first)
            if seen[0][labels].all():  # the usual run: no class shown for the first time
                visible = None
                masked = ~seen[0][predicted]
            else:
                visible = self._seen_from(labels)
                masked = visible[predicted] > np.arange(rows)
            masked |= ~(top < np.inf)
            if masked.any():
                again = np.flatnonzero(masked)
                if visible is None:
                    visible = np.where(seen[0], 0, rows)
                bias = np.where(visible <= again[:, None], 0.0, -np.inf).astype(raw.dtype)
                fixed, fixed_answered = argmax_answered(raw[again] + bias)
                predicted[again] = fixed
                answered[again] = True if fixed_answered is None else fixed_answered
        hits = predicted == labels
        self.prequential.update(hits if answered.all() else hits[answered])
        self.rows = 0
        self._ends = []

    def _seen_from(self, labels: np.ndarray) -> np.ndarray:
        """The first kept row each class counts as seen in (0: seen before, ``len(labels)``:
        not by the end), marking the classes the kept batches show first: a class first shown
        by a batch is seen from the end of that batch on."""
        seen = self.seen
        visible = np.where(seen[0], 0, len(labels))
        fresh = np.flatnonzero(~seen[0][labels])
        if len(fresh):
            shown, first = np.unique(labels[fresh], return_index=True)
            ends = np.asarray(self._ends)
            visible[shown] = ends[np.searchsorted(ends, fresh[first], side="right")]
            seen.mark(0, shown)
        return visible
