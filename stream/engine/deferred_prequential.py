"""Prequential accuracy and seen-class marks of a run of micro-batches, counted in one go.

Per micro-batch the event loop needs the learner's scores (taken before it learns the batch),
the argmax over the classes seen before the batch, the hits, a ring-buffer update and the marks
of the batch's classes: about a dozen numpy calls on a few kilobytes. Between the calls of a
small learner such as ``nmc`` each costs several times what it costs alone (measured in
bench/engine_overhead.py: together they took a quarter of the loop's time). When nothing
reads them batch by batch (no drift detector, no observer that reads hits), the loop instead
keeps each batch's scores and labels here (a fused learner's scores uncopied: they are the
loop's, learners/capabilities.py) and counts a run of batches at once, with the same result:

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

# Rows kept before counting: the per-run calls run cold (right after the learner, whose work
# evicted the loop's code and data), so a run spreads them over many batches; but a longer run
# reads more of its scores back from beyond the cache. Paired against the bare loop at batch 64
# and 256 (nmc, 100 classes), runs of 1024 and 2048 rows did best, 512 and 4096 worse
# (bench/engine_overhead.py). The byte cap bounds what a run holds with many classes.
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
        # the kept batches' score tensors and label tensors, in stream order; every part has
        # the dtype and columns of ``_layout``
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._layout: tuple[torch.dtype, int] | None = None
        # flat index of each row's first score
        self._row_starts = np.arange(0, self.capacity * num_classes, num_classes)
        self._ends: list[int] = []  # where each batch's rows end
        self.rows = 0

    def add(self, scores: torch.Tensor, y: torch.Tensor, owned: bool = False) -> None:
        """Keep one batch's scores ``[B, C]`` and labels ``[B]``; ``B`` at most :attr:`capacity`.

        ``owned``: nothing writes ``scores`` again (a fused learner's, whose contract says so),
        so they are kept as they are; otherwise they are copied (a learner may reuse the tensor
        its ``predict`` returned). Labels are never copied: a batch is not changed once the
        loop has it. Between a small learner's calls each torch or numpy call costs several
        times what it costs alone, so a batch adds no call here but the copy it needs."""
        if scores.requires_grad:
            scores = scores.detach()
        if not owned:
            scores = scores.clone()
        layout = (scores.dtype, scores.shape[1])
        if layout != self._layout:
            self.flush()
            self._layout = layout
        elif self.rows + len(y) > self.capacity:
            self.flush()
        self._scores.append(scores)
        self._labels.append(y)
        self.rows += len(y)
        self._ends.append(self.rows)

    def flush(self) -> None:
        """Count every kept batch, in stream order, and forget them."""
        rows = self.rows
        if not rows:
            return
        parts, labelled = self._scores, self._labels
        raw = (parts[0] if len(parts) == 1 else torch.cat(parts)).numpy(force=True)
        labels = (labelled[0] if len(labelled) == 1 else torch.cat(labelled)).numpy(force=True)
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
        self._scores, self._labels, self._ends = [], [], []

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
