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
- :class:`FusedPrediction` — predict-before-learn in one call. The engine's default step calls
  ``predict`` and then ``learn``; a learner whose first learning step computes what the
  prediction needs anyway (the stream batch's features under the same weights: ``er``, ``uer``,
  ``pl-fms``) returns the prediction from that step, so prequential accuracy costs no forward
  of its own. Learners without it keep the two calls.
- :class:`MultiLevelPrediction` — every level's scores from one backbone pass, which the anytime
  evaluation of a hierarchy uses instead of one ``predict`` per level.
- :class:`PurePrediction` — ``predict`` reads the learner and changes nothing, so the anytime
  evaluation may run it under ``torch.inference_mode`` (no version counters, no autograd
  records). A learner that caches work in ``predict`` for a later ``learn`` (a lazily solved
  ridge head, a feature cache) must not declare it: a tensor made in inference mode cannot be
  updated in place outside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum

import torch


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


class SequentialLearner(ABC):
    """Mixin of learners that can predict each sample of a batch just before learning it."""

    @abstractmethod
    def test_then_train(
        self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor, iterations: int = 1
    ) -> torch.Tensor:
        """For each sample in order, predict its class at its level, then learn it.

        Returns ``[B]`` class ids (int64): sample ``i``'s prediction, made after samples
        ``< i`` were learned and before sample ``i`` was, equal to the argmax of
        ``predict`` at that moment; ``-1`` where the learner could not predict (every class
        scored ``-inf``). Learning must equal ``learn(x, y, level, iterations)``.
        """


class FusedPrediction(ABC):
    """Mixin of learners that predict a batch and learn it in one call, sharing work between the
    two (a replay learner's first step computes the features the prediction needs)."""

    @abstractmethod
    def predict_then_learn(
        self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor, iterations: int = 1
    ) -> torch.Tensor:
        """``predict`` of each sample at its own level, made before learning the batch, then
        ``learn(x, y, level, iterations)``.

        Returns ``[B, max(num_classes)]`` scores, each row equal to what ``predict(x, level)``
        would have given it before the batch was learned (up to floating-point summation order),
        padded with ``-inf`` beyond its level's classes. Learning must equal ``learn``'s.
        """


class MultiLevelPrediction(ABC):
    """Mixin of learners that score several hierarchy levels from one backbone pass."""

    @abstractmethod
    def predict_levels(self, x: torch.Tensor, levels: list[int]) -> list[torch.Tensor]:
        """``[predict(x, level) for level in levels]``, the backbone run once."""


class PurePrediction:
    """Marker of learners whose ``predict`` changes no state (see the module docstring)."""
