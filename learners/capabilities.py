r"""Capabilities a learner may declare beyond the four verbs of :class:`learners.base.Learner`.

The engine and the contract checks (:mod:`learners.checks`) look for these by ``isinstance``:

- :class:`SequentialLearner` — the per-sample path. The engine's default micro-batch step
  predicts a whole batch, then learns it. A learner that updates sample by sample anyway (a
  river model's ``learn_one``) can instead predict each sample just before learning it, inside
  the batch, which is exactly river's test-then-train (``evaluate.progressive_val_score``) at any
  batch size, and converts each input once instead of twice.
- :class:`DriftAdaptive` — what a learner does when the engine detects a concept drift on the
  prequential error stream (``stream/engine/drift_detection.py``). On a detection the engine asks
  the learner to adapt with one of the :class:`DriftAction`\ s it declares; the learner knows
  nothing about the detector:

  - ``none``: log and count only;
  - ``reset``: forget learned statistics and start afresh (``nmc``'s class means, a river
    model's state);
  - ``grow_recent``: grow the share of recent samples in the replay memory (``er``).

  Asking a learner for an action it does not declare is a configuration error, reported before
  the stream starts.
- :class:`Mergeable` — ``merge(other)``: absorb what another learner of the same name, config
  and problem learned, so that the result equals one learner that saw both streams (up to
  floating-point rounding; the order of the additions differs). Learners whose state is
  sufficient statistics offer it (``acil``, ``aef-ocl``, ``nmc``, ``slda``); ``ds-al`` does
  not (its compensation targets depend on the main stream's state at each batch), nor do the
  gradient learners.

- :class:`FusedPrediction` — predict-before-learn in one call. The engine's default step calls
  ``predict`` and then ``learn``; a learner whose first learning step computes what the
  prediction needs anyway (the stream batch's features under the same weights: ``er``, ``uer``,
  ``pl-fms``; the backbone output that ``nmc`` both scores and adds to its class sums) returns
  the prediction from that step, so prequential accuracy costs no forward of its own. Learners
  without it keep the two calls.
- :class:`MultiLevelPrediction` — every level's scores from one backbone pass, which the anytime
  evaluation of a hierarchy uses instead of one ``predict`` per level.
- :class:`PurePrediction` — ``predict`` reads the learner and changes nothing, so the anytime
  evaluation may run it under ``torch.inference_mode`` (no version counters, no autograd
  records). A learner that caches work in ``predict`` for a later ``learn`` (a lazily solved
  ridge head, a feature cache) must not declare it: a tensor made in inference mode cannot be
  updated in place outside it.

The contract checks (:func:`learners.checks.yield_checks`) pick the checks of each capability
a learner declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

import torch

from learners.levels import Levels


class DriftAction(StrEnum):
    NONE = "none"
    RESET = "reset"
    GROW_RECENT = "grow_recent"


class DriftAdaptive(ABC):
    """Mixin of learners that can react to a detected drift.

    ``drift_actions`` lists the actions the learner supports; it may depend on the learner's
    config (``er`` grows the recent share only of a reservoir memory)."""

    drift_actions: frozenset[DriftAction]

    @abstractmethod
    def on_drift(self, action: DriftAction) -> None:
        """Apply ``action`` (one of :attr:`drift_actions`, never ``none``) now."""


def supported_actions(learner: object) -> frozenset[DriftAction]:
    """The actions ``learner`` supports; ``none`` always is."""
    declared = learner.drift_actions if isinstance(learner, DriftAdaptive) else frozenset()
    return frozenset({DriftAction.NONE, *declared})


class Mergeable(ABC):
    """Mixin of learners that can absorb another learner's state.

    ``can_merge`` may depend on the config (a ridge head in its recursive Woodbury form keeps
    no statistics to add)."""

    @property
    def can_merge(self) -> bool:
        return True

    @abstractmethod
    def merge(self, other: Self) -> None:
        """Absorb what ``other`` (same class, config and problem) learned; afterwards this
        learner equals one that saw both streams. Raises ValueError for any other learner."""

    def refuse_foreign(self, other: object) -> None:
        """Raise ValueError unless ``other`` is a learner of this class, config and problem."""
        mine = (getattr(self, "config", None), getattr(self, "problem", None))
        theirs = (getattr(other, "config", None), getattr(other, "problem", None))
        if type(other) is not type(self) or mine != theirs:
            raise ValueError(
                f"cannot merge {type(other).__name__} into {type(self).__name__}: "
                "different configs or problems"
            )


def mergeable(learner: object) -> bool:
    """Whether ``learner`` offers :meth:`Mergeable.merge` in its configuration."""
    return isinstance(learner, Mergeable) and learner.can_merge


class SequentialLearner(ABC):
    """Mixin of learners that can predict each sample of a batch just before learning it."""

    @abstractmethod
    def test_then_train(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        """For each sample in order, predict its class at its level, then learn it.

        Returns ``[B]`` class ids (int64): sample ``i``'s prediction, made after samples
        ``< i`` were learned and before sample ``i`` was, equal to the argmax of
        ``predict`` at that moment; ``-1`` where the learner could not predict (every class
        scored ``-inf``). Learning must equal ``learn(x, y, level, iterations)``.
        """


class SyncedStatistics(ABC):
    """Learners whose learned state is statistics that copies of the learner can combine, so
    that the scale-out daemon (``stream/daemon/statistics_sync.py``) keeps one exact model over
    several workers: :class:`AdditiveStatistics`, :class:`MomentStatistics` or both."""

    @abstractmethod
    def statistics_changed(self) -> None:
        """Drop whatever was derived from the statistics (they were changed in place)."""


class AdditiveStatistics(SyncedStatistics):
    """Mixin of learners whose learned state is a sum over the samples learned.

    Learning a batch adds that batch's contribution to a fixed list of float64 tensors (class
    sums and counts, a ridge head's HᵀH and HᵀY), and everything the learner predicts with is
    derived from them. Two copies of a learner that start equal and learn disjoint parts of a
    stream therefore add up, tensor by tensor, to one that learned all of it, in any order:
    the scale-out daemon all-reduces each copy's increment since the last sync point. ``merge``
    on two whole learners is the same sum.
    """

    @abstractmethod
    def additive_statistics(self) -> list[torch.Tensor]:
        """The live statistics tensors, in a fixed order; changing them in place changes the
        learner once :meth:`statistics_changed` is called."""


@dataclass(frozen=True)
class ClassMomentsView:
    """Live per-class counts ``[C]``, means ``[C, d]`` and centred second moments of one label
    space: ``pooled`` — one within-class scatter ``[d, d]`` summed over the classes (slda);
    otherwise per-class, per-feature sums of squared deviations ``[C, d]`` (aef-ocl)."""

    counts: torch.Tensor
    means: torch.Tensor
    second: torch.Tensor
    pooled: bool


class MomentStatistics(SyncedStatistics):
    """Mixin of learners that keep class means and centred second moments, which two sample
    sets combine by Chan et al.'s parallel update (not by addition). The scale-out daemon
    gathers each copy's moments of the samples since the last sync point and combines them, in
    rank order, into the last sync point's."""

    @abstractmethod
    def moment_statistics(self) -> list[ClassMomentsView]:
        """Views of the live moment tensors, in a fixed order (changed in place by a sync,
        followed by :meth:`statistics_changed`)."""


class FusedPrediction(ABC):
    """Mixin of learners that predict a batch and learn it in one call, sharing work between the
    two (a replay learner's first step computes the features the prediction needs)."""

    @abstractmethod
    def predict_then_learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        """``predict`` of each sample at its own level, made before learning the batch, then
        ``learn(x, y, level, iterations)``.

        Returns ``[B, max(num_classes)]`` scores, each row equal to what ``predict(x, level)``
        would have given it before the batch was learned (up to floating-point summation order),
        padded with ``-inf`` beyond its level's classes. Learning must equal ``learn``'s.
        The tensor is the caller's: the learner never writes it again (the event loop keeps a
        run of them uncopied until it counts them, stream/engine/deferred_prequential.py).
        """


class MultiLevelPrediction(ABC):
    """Mixin of learners that score several hierarchy levels from one backbone pass."""

    @abstractmethod
    def predict_levels(self, x: torch.Tensor, levels: list[int]) -> list[torch.Tensor]:
        """``[predict(x, level) for level in levels]``, the backbone run once."""


class PurePrediction:
    """Marker of learners whose ``predict`` changes no state (see the module docstring)."""
