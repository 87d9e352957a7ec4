"""One model from many workers, exactly: combine what each worker learned since the last sync.

Learners declare their statistics (:mod:`learners.capabilities`):

- :class:`AdditiveStatistics` (acil, nmc, ds-al, aef-ocl's heads): tensors that learning only adds
  to. Every rank sends its increment since the last sync point, ``live − base``, to one
  all-reduce, and the sum is added to ``base`` on every rank.
- :class:`MomentStatistics` (slda, aef-ocl's class moments): class counts, means and centred
  second moments, which combine by Chan et al.'s parallel update, not by addition. Each rank
  recovers the moments of its own samples since the last sync point from ``base`` and ``live``
  (Chan's update solved for the second operand), the ranks all-gather them, and every rank
  combines them into ``base`` in rank order.

Afterwards every rank holds the statistics of one learner that learned every rank's samples,
which equal a single-process run on all of them up to float64 rounding in the order of the
operations (far below 1e-9 relative), and every rank holds the same bits. Between sync points a
rank predicts with its own view: the global model of the last sync point plus what it learned
since.

Costs: one copy of the statistics (``base``) per rank, and per sync point one all-reduce of the
additive statistics (8·d² bytes per level for an analytic head of width d; a ring all-reduce
sends about twice that per rank, whatever the world size) plus one all-gather of the moments
(world size × their size).
"""

from __future__ import annotations

import torch

from learners.base import Learner
from learners.capabilities import (
    AdditiveStatistics,
    ClassMomentsView,
    MomentStatistics,
    SyncedStatistics,
)
from stream.daemon.distributed import Collectives


class StatisticsSync:
    """Keeps every rank's copy of a learner with synced statistics equal at each
    :meth:`synchronize`."""

    def __init__(self, learner: Learner, collectives: Collectives) -> None:
        if not isinstance(learner, SyncedStatistics):
            raise TypeError(f"{learner.name} has no statistics to synchronise")
        self.learner = learner
        self.collectives = collectives
        self.base: list[torch.Tensor] = []
        self.base_moments: list[ClassMomentsView] = []
        self.rebase()

    def _additive(self) -> list[torch.Tensor]:
        learner = self.learner
        return learner.additive_statistics() if isinstance(learner, AdditiveStatistics) else []

    def _moments(self) -> list[ClassMomentsView]:
        learner = self.learner
        return learner.moment_statistics() if isinstance(learner, MomentStatistics) else []

    def rebase(self) -> None:
        """Take the learner's statistics as they are now as the common starting point (after a
        restore, when every rank loaded the same global model)."""
        self.base = [t.detach().clone() for t in self._additive()]
        self.base_moments = [
            ClassMomentsView(m.counts.clone(), m.means.clone(), m.second.clone(), m.pooled)
            for m in self._moments()
        ]

    def non_finite(self) -> str | None:
        """Which of this rank's statistics hold NaN or inf (None: all finite): one pass over
        them, before a sync point would spread them to every rank."""
        named = [(f"additive statistic {i}", t) for i, t in enumerate(self._additive())]
        for i, view in enumerate(self._moments()):
            named += [
                (f"moments {i} {part}", getattr(view, part))
                for part in ("counts", "means", "second")
            ]
        for name, tensor in named:
            if not bool(torch.isfinite(tensor.detach().sum(dtype=torch.float64))) and not bool(
                torch.isfinite(tensor).all()
            ):
                return f"{name} holds NaN or inf"
        return None

    def synchronize(self) -> None:
        """Every rank's statistics become those of all ranks' samples together."""
        live = self._additive()
        if [t.shape for t in live] != [b.shape for b in self.base]:
            raise RuntimeError("the learner's statistics changed shape since the last sync point")
        if live:
            increments = torch.cat(
                [(t - b).flatten() for t, b in zip(live, self.base, strict=True)]
            )
            self.collectives.sum_(increments)
            start = 0
            for tensor, base in zip(live, self.base, strict=True):
                size = tensor.numel()
                base += increments[start : start + size].view_as(base)
                tensor.copy_(base)
                start += size
        moments = self._moments()
        if moments:
            mine = torch.cat(
                [flatten(since_base(m, b)) for m, b in zip(moments, self.base_moments, strict=True)]
            )
            for theirs in self.collectives.gather_(mine):
                start = 0
                for common in self.base_moments:
                    size = _flat_size(common)
                    combine(common, unflatten(theirs[start : start + size], common))
                    start += size
            for view, common in zip(moments, self.base_moments, strict=True):
                view.counts.copy_(common.counts)
                view.means.copy_(common.means)
                view.second.copy_(common.second)
        self.learner.statistics_changed()


def combine(into: ClassMomentsView, other: ClassMomentsView) -> None:
    """Chan et al.'s parallel update: ``into`` becomes the moments of both sample sets."""
    present = other.counts > 0
    n_a, n_b = into.counts[present], other.counts[present]
    n = n_a + n_b
    delta = other.means[present] - into.means[present]
    weight = (n_a * n_b / n).unsqueeze(1)
    if into.pooled:
        into.second.add_(other.second)
        into.second.addmm_(delta.T, delta * weight)
    else:
        into.second[present] += other.second[present] + delta * delta * weight
    into.means[present] += delta * (n_b / n).unsqueeze(1)
    into.counts[present] = n


def since_base(live: ClassMomentsView, base: ClassMomentsView) -> ClassMomentsView:
    """The moments of the samples ``live`` gained since ``base``: :func:`combine` solved for
    its second operand, so that ``combine(base, since_base(live, base))`` gives ``live``."""
    counts = live.counts - base.counts
    present = counts > 0
    means = torch.zeros_like(live.means)
    n, n_b, n_a = live.counts[present], counts[present], base.counts[present]
    sums = live.means[present] * n.unsqueeze(1) - base.means[present] * n_a.unsqueeze(1)
    means[present] = sums / n_b.unsqueeze(1)
    delta = means[present] - base.means[present]
    weight = (n_a * n_b / n).unsqueeze(1)
    second = live.second - base.second
    if live.pooled:
        second.addmm_(delta.T, delta * weight, alpha=-1)
    else:
        second[present] -= delta * delta * weight
    return ClassMomentsView(counts, means, second, live.pooled)


def _flat_size(view: ClassMomentsView) -> int:
    return view.counts.numel() + view.means.numel() + view.second.numel()


def flatten(view: ClassMomentsView) -> torch.Tensor:
    """Counts, means and second moments in one flat tensor, in that order."""
    return torch.cat([view.counts.flatten(), view.means.flatten(), view.second.flatten()])


def unflatten(flat: torch.Tensor, like: ClassMomentsView) -> ClassMomentsView:
    """The inverse of :func:`flatten`, shaped like ``like``."""
    c, m = like.counts.numel(), like.means.numel()
    return ClassMomentsView(
        flat[:c].view_as(like.counts),
        flat[c : c + m].view_as(like.means),
        flat[c + m : c + m + like.second.numel()].view_as(like.second),
        like.pooled,
    )
