"""The learner as a trust boundary: undo a micro-batch whose learning fails or poisons the state.

A finite but extreme sample, or a learner bug that one input triggers, can make ``learn`` raise
("not positive definite") or leave NaN/inf in the learner's statistics; kept, that state would go
into the next checkpoint and fail every prediction after every restart. :class:`LearnerGuard`
sits between a source and :class:`~stream.engine.event_loop.EventLoop`:

- :meth:`LearnerGuard.mark_good` keeps a copy of the learner's state (serialised exactly as a
  checkpoint serialises it) and the loop's state, and starts a journal of the batches learned
  after it; the daemon calls it with every checkpoint, so the journal holds at most one
  checkpoint interval of batches;
- :meth:`LearnerGuard.process` runs a batch through the loop; if anything raises, the learner and
  loop are restored to the last good copy and the journal is learned again (a learner is
  deterministic given its state, so this re-creates exactly the state before the batch), and the
  batch is handed back as rejected. Unless the learner cannot even predict the batch it learned
  last (which it predicted before learning it): then that state is the problem, not the batch (a
  finite but extreme sample whose statistics pass every finiteness check and make every later
  solve fail), so the journal is learned again batch by batch, undoing each batch the learner
  cannot predict once it has learned it, and the failed batch is tried once more. Rejecting it
  instead, and every batch after it, kept the poisoned state;
- :meth:`LearnerGuard.verify` checks that every tensor of the state is finite (one pass over the
  state, before each checkpoint, rather than after every batch) and that the learner still
  predicts the batch it learned last; if not, it re-learns the journal from the good copy batch by
  batch, checking after each, and rejects the batches that turn the state non-finite or
  unpredictable.

The journal keeps what :meth:`EventLoop.process` was given, including the classes served for
joined labels (stream/engine/serving.py), so a re-learn scores them on what was served, as the
first time. What was rejected never counts as learned: the loop's own state (samples seen,
prequential accuracy, seen classes) comes back with the learner's. Observers see each batch once, when it is
first learned; re-learning runs with them muted, and a batch rejected after it was observed
stays in counters such as ``streamcl_samples_total``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from learners.state.learner_state import LearnerState, non_finite
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop

Tag = TypeVar("Tag")


@dataclass
class Rejected(Generic[Tag]):
    """A batch the learner could not learn safely, with the caller's tag and why."""

    batch: Batch
    tag: Tag
    problem: str


@dataclass
class Learned(Generic[Tag]):
    """A batch of the journal: what :meth:`EventLoop.process` was given (``served``: the
    classes served for joined labels, stream/engine/serving.py) and the caller's tag."""

    batch: Batch
    served: np.ndarray | None
    tag: Tag

    def again(self, loop: EventLoop) -> None:
        loop.process(self.batch, self.served)


class LearnerGuard(Generic[Tag]):
    """Runs batches through ``loop``; rejects, and undoes, those the learner cannot take."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.journal: list[Learned[Tag]] = []
        self._learner_bytes = b""
        self._loop_state = ""
        self.mark_good()

    def mark_good(self, state: LearnerState | None = None) -> None:
        """The learner's state now (``state``, if the caller has it already) is the point to
        return to; forget the journal before it."""
        state = self.loop.learner.state_dict() if state is None else state
        self._learner_bytes = state_to_bytes(state)
        self._loop_state = json.dumps(self.loop.state_dict())
        self.journal = []

    def process(
        self, batch: Batch, tag: Tag, served: np.ndarray | None = None
    ) -> list[Rejected[Tag]]:
        """Predict and learn ``batch`` (``served``: as for :meth:`EventLoop.process`); if that
        raises, undo it and return what was rejected: the batch, or, when the learner cannot
        even predict the batch it learned last, the journal's batches after which it could not
        (then ``batch`` is learned once more, and rejected too only if it fails again)."""
        learned = Learned(batch, served, tag)
        try:
            learned.again(self.loop)
        except Exception as exc:  # a learner may fail in any way; the batch is what is refused
            self._restore(self.journal)
            refused = Rejected(batch, tag, f"{type(exc).__name__}: {exc}")
        else:
            self.journal.append(learned)
            return []
        if not self.journal or cannot_predict(self.loop, self.journal[-1].batch) is None:
            return [refused]
        # The learner cannot predict even the batch it learned last, which it predicted before
        # learning it: a batch of the journal left a state nothing can be predicted from (a
        # finite but extreme sample: statistics too ill-conditioned to solve). Rejecting
        # ``batch``, and every batch after it, would keep that state and refuse the innocent.
        rejected = self._undo_failing(lambda learned: cannot_predict(self.loop, learned.batch))
        try:
            learned.again(self.loop)
        except Exception as exc:
            self._restore(self.journal)
            return [*rejected, Rejected(batch, tag, f"{type(exc).__name__}: {exc}")]
        self.journal.append(learned)
        return rejected

    def verify(self) -> list[Rejected[Tag]]:
        """Check the state is finite and still predicts the batch learned last; if not, undo
        the batches since :meth:`mark_good` that made it so (returned) and keep the others
        learned. (Before a checkpoint: a state no prediction can use, left by the last batch
        before it, would otherwise become the good state every later batch fails on.)"""
        if non_finite(self.loop.learner.state_dict()) is not None:
            return self._undo_failing(lambda _: non_finite(self.loop.learner.state_dict()))
        if self.journal and cannot_predict(self.loop, self.journal[-1].batch) is not None:
            return self._undo_failing(lambda learned: cannot_predict(self.loop, learned.batch))
        return []

    def _undo_failing(self, check: Callable[[Learned[Tag]], str | None]) -> list[Rejected[Tag]]:
        """Learn the journal again from the last good state batch by batch, ``check``-ing the
        state after each (given the batch just learned; a problem, or None), and undo those
        after which it fails (returned); the state is then exactly the good one plus the
        journal's other batches."""
        kept: list[Learned[Tag]] = []
        rejected: list[Rejected[Tag]] = []
        self._restore([])
        for learned in self.journal:
            failure = None
            try:
                with self._muted():
                    learned.again(self.loop)
                failure = check(learned)
            except Exception as exc:  # learned once already; should it fail now, refuse it too
                failure = f"{type(exc).__name__}: {exc}"
            if failure is None:
                kept.append(learned)
            else:
                rejected.append(Rejected(learned.batch, learned.tag, failure))
                self._restore(kept)
        # (Should none fail now, the learner was not deterministic: the re-learned state is kept
        # and nothing is refused.) Learned once more without the checks, which may have changed
        # what a prediction changes (a cached solution, a draw counter).
        self._restore(kept)
        self.journal = kept
        return rejected

    def _restore(self, batches: Sequence[Learned[Tag]]) -> None:
        """Back to the last good state, then learn ``batches`` again."""
        self.loop.learner.load_state_dict(state_from_bytes(self._learner_bytes))
        self.loop.load_state_dict(json.loads(self._loop_state))
        with self._muted():
            for learned in batches:
                learned.again(self.loop)

    def _muted(self) -> _Muted:
        return _Muted(self.loop)


def cannot_predict(loop: EventLoop, batch: Batch) -> str | None:
    """Why ``loop``'s learner cannot predict ``batch`` at every level from its state now (None:
    it can): the prediction raises. (NaN scores are a prediction the engine scores as none, not
    a failure.) The prediction does what the next one would do anyway (solve and cache a ridge
    head, draw AEF-OCL's pseudo-features after new statistics)."""
    try:
        for level in range(loop.problem.num_levels):
            loop.learner.predict(batch.x, level)
    except Exception as exc:
        return f"the model cannot predict from the state it reached ({type(exc).__name__}: {exc})"
    return None


class _Muted:
    """Observers switched off: they saw these batches when they were first learned."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.saved: list[Any] = []

    def __enter__(self) -> None:
        self.saved, self.loop.observers = self.loop.observers, []

    def __exit__(self, *exc: object) -> None:
        self.loop.observers = self.saved
