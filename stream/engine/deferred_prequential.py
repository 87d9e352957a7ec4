"""Prequential accuracy and seen-class marks of a run of micro-batches, counted in one go.

Per micro-batch the event loop needs the learner's scores (taken before it learns the batch),
the argmax over the classes seen before the batch, the hits, a ring-buffer update and the marks
of the batch's classes: about a dozen numpy calls on a few kilobytes. Between the calls of a
small learner such as ``nmc`` each costs several times what it costs alone (measured in
bench/engine_overhead.py: together they took a quarter of the loop's time). When nothing
reads them batch by batch (no observer, no drift detector), the loop instead copies each
batch's scores and labels here and counts a run of batches at once, with the same result:

- each row is masked with the classes seen before *its* batch: the run's scores get the mask of
  the end of the run, and a class the run showed first gets ``-inf`` added again in the rows
  before the end of the batch that showed it, which is, value for value, what masking each
  batch alone adds (``x + 0 + -inf == x + -inf`` for every float, NaN and infinities included);
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
        self._labels = np.empty(self.capacity, dtype=np.int64)
        self._ends: list[int] = []  # where each batch's rows end
        self.rows = 0

    def add(self, scores: torch.Tensor, y: np.ndarray) -> None:
        """Keep one batch's scores ``[B, C]`` (copied: the learner may reuse its tensor) and
        labels ``[B]``; ``B`` at most :attr:`capacity`."""
        start = self.rows
        end = start + len(y)
        buffer = self._scores
        if buffer is None or scores.dtype is not buffer.dtype or scores.shape[1] != buffer.shape[1]:
            self.flush()
            start, end = 0, len(y)
            buffer = self._scores = torch.empty(
                (self.capacity, scores.shape[1]), dtype=scores.dtype, device=scores.device
            )
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
        seen = self.seen
        fresh = None if seen.all_seen(0) else np.flatnonzero(~seen[0][labels])
        if fresh is None or not len(fresh):
            predicted, answered = argmax_answered(seen.masked_array(raw, 0))
        else:
            classes, first = np.unique(labels[fresh], return_index=True)
            ends = np.asarray(self._ends)
            # a class first shown by a batch is seen from the end of that batch on
            seen_from = ends[np.searchsorted(ends, fresh[first], side="right")]
            seen.mark(0, classes)
            masked = seen.masked_array(raw, 0)
            for label, row in zip(classes.tolist(), seen_from.tolist(), strict=True):
                masked[:row, label] += -np.inf
            predicted, answered = argmax_answered(masked)
        hits = predicted == labels
        self.prequential.update(hits if answered is None else hits[answered])
        self.rows = 0
        self._ends = []
