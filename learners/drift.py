"""The optional drift hook: what a learner does when the engine detects a concept drift.

The engine watches the prequential error stream with a drift detector (``stream/drift.py``).
On a detection it asks the learner to adapt with one of these actions, if the learner
declares that it supports it; the learner knows nothing about the detector:

- ``none``: log and count only;
- ``reset``: forget learned statistics and start afresh (``nmc``'s class means, a river
  model's state);
- ``grow_recent``: grow the share of recent samples in the replay memory (``er``).

Asking a learner for an action it does not declare is a configuration error, reported before
the stream starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum


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
