"""The event loop's log lines: evaluations, task ends, periodic progress and the end of a stream.

Every line carries ``learner`` and ``samples`` (samples learned so far). Fields that hold for
the whole run go on with :meth:`LoopLogger.bind`; fields that change per batch, such as the
daemon's ``topic``/``partition``/``offset``, come from ``structlog.contextvars`` bound by the
caller around each batch (see ``stream.observe.log_setup``). Periodic evaluations are ``debug`` (there
is one per ``eval_period`` samples); task ends, progress and the end of the stream are ``info``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from stream.engine.batch import Batch
from stream.engine.evaluation import Evaluation
from stream.engine.event_loop import EventLoop, Observer


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


class LoopLogger(Observer):
    """Logs what one learner's event loop does, with ``learner`` and ``samples`` on every line."""

    reads_hits = False

    def __init__(
        self,
        learner: str,
        progress_seconds: float = 30.0,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = (logger or structlog.get_logger("streamcl.loop")).bind(learner=learner)
        self._warned_unanswered = False
        self.progress_seconds = progress_seconds
        self._clock = clock
        self._last_time = clock()
        self._last_samples: int | None = None

    def bind(self, **fields: Any) -> None:
        """Put ``fields`` on every later line of this loop."""
        self.log = self.log.bind(**fields)

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray | None, learn_seconds: float
    ) -> None:
        if self._last_samples is None:
            # The first batch starts the clock: setup time is not throughput.
            self._last_time, self._last_samples = self._clock(), loop.samples_seen - len(batch)
        now = self._clock()
        elapsed = now - self._last_time
        if elapsed < self.progress_seconds:
            return
        self.log.info(
            "progress",
            samples=loop.samples_seen,
            samples_per_second=round((loop.samples_seen - self._last_samples) / elapsed, 1),
            prequential_accuracy=_rounded(loop.prequential.cumulative),
            prequential_accuracy_rolling=_rounded(loop.prequential.rolling),
            memory_samples=loop.learner.memory_samples,
            seen_classes=self._seen(loop),
        )
        self._last_time, self._last_samples = now, loop.samples_seen

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        fields: dict[str, Any] = {
            "samples": loop.samples_seen,
            "anytime_accuracy": _rounded(evaluation.accuracy),
            "A_auc": _rounded(loop.anytime_auc()),
            "prequential_accuracy": _rounded(loop.prequential.cumulative),
            "seen_classes": self._seen(loop),
        }
        if loop.problem.num_levels > 1:
            fields["level_accuracy"] = {
                name: _rounded(acc)
                for name, acc in zip(
                    loop.problem.level_names, evaluation.level_accuracy, strict=True
                )
            }
        if evaluation.unanswered:
            self._warn_unanswered(evaluation)
        if kind == "task_end":
            self.log.info("task_end", task=loop.evaluations.counts["task_end"] - 1, **fields)
        else:
            self.log.debug("evaluation", **fields)

    def _warn_unanswered(self, evaluation: Evaluation) -> None:
        """Once a run (then at debug level): a learner whose scores are NaN or ``-inf`` for
        every seen class has diverged, and its evaluations count those samples as wrong."""
        log = self.log.debug if self._warned_unanswered else self.log.warning
        self._warned_unanswered = True
        log(
            "learner_gave_no_prediction",
            samples=evaluation.samples_seen,
            unanswered_test_samples=evaluation.unanswered,
            hint="its scores are NaN or -inf for every seen class: the model has likely "
            "diverged (a learning rate too high?); such samples count as wrong",
        )

    def on_finish(self, loop: EventLoop) -> None:
        summary = loop.summary()
        self.log.info(
            "stream_finished",
            samples=loop.samples_seen,
            **{key: _rounded(summary[key]) for key in ("A_auc", "A_avg", "A_last", "F_last")},
            prequential_accuracy=_rounded(summary["prequential_accuracy"]),
            learn_seconds=round(loop.learn_seconds, 3),
        )

    @staticmethod
    def _seen(loop: EventLoop) -> dict[str, int]:
        return {
            name: int(seen.sum())
            for name, seen in zip(loop.problem.level_names, loop.seen, strict=True)
        }
