"""One model from many workers, exactly: all-reduce the increments of additive statistics.

A learner with :class:`learners.capabilities.AdditiveStatistics` (acil, nmc, ds-al) holds
tensors that learning only adds to. Every worker starts from the same statistics (the last sync
point's), learns its own partitions, and at the next sync point sends the increment it gathered
since, ``live − base``; the all-reduced sum of the increments is added to ``base`` on every rank.
Afterwards every rank holds base + Σ increments, the statistics of one learner that learned every
rank's samples, which equals a single-process run on all of them up to float64 rounding in the
order of the additions (far below 1e-9 relative). Between sync points a rank predicts with its
own view: the global model of the last sync point plus what it learned since.

Costs: one copy of the statistics (``base``) and one all-reduce of their size per sync point; for
an analytic head of width d that is 8·d² bytes per level (ring all-reduce sends about twice that
per rank, whatever the world size).
"""

from __future__ import annotations

import torch

from learners.base import Learner
from learners.capabilities import AdditiveStatistics
from stream.daemon.distributed import Collectives


class StatisticsSync:
    """Keeps every rank's copy of an additive learner equal at each :meth:`synchronize`."""

    def __init__(self, learner: Learner, collectives: Collectives) -> None:
        if not isinstance(learner, AdditiveStatistics):
            raise TypeError(f"{learner.name} has no additive statistics to synchronise")
        self.learner = learner
        self.collectives = collectives
        self.base: list[torch.Tensor] = []
        self.rebase()

    def rebase(self) -> None:
        """Take the learner's statistics as they are now as the common starting point (after a
        restore, when every rank loaded the same global model)."""
        self.base = [t.detach().clone() for t in self.learner.additive_statistics()]

    def synchronize(self) -> None:
        """Every rank's statistics become base + the sum of all ranks' increments."""
        live = self.learner.additive_statistics()
        if [t.shape for t in live] != [b.shape for b in self.base]:
            raise RuntimeError("the learner's statistics changed shape since the last sync point")
        increments = torch.cat([(t - b).flatten() for t, b in zip(live, self.base, strict=True)])
        self.collectives.sum_(increments)
        start = 0
        for tensor, base in zip(live, self.base, strict=True):
            size = tensor.numel()
            base += increments[start : start + size].view_as(base)
            tensor.copy_(base)
            start += size
        self.learner.statistics_changed()
