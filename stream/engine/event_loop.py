"""The event loop: micro-batches in, predict-then-learn, anytime evaluation, metrics out.

Per micro-batch, in order:

1. if the batch starts a new task, evaluate at the end of the previous one(s);
2. predict the batch before learning it (prequential, test-then-train accuracy), with the
   classes the stream has not shown masked out (stream/engine/seen_classes.py, as for the
   anytime evaluation); a learner that declares
   :class:`~learners.capabilities.FusedPrediction` returns this prediction from the call that
   learns the batch (step 3), computed from its first step's forward;
3. mark the batch's classes seen; accumulate ``online_iter`` and let the learner take
   ``int(accumulated)`` update steps, keeping the fraction for later batches (as i-Blurry does);
4. with drift detection configured, feed the batch's prequential errors to the detector and,
   on a detection, apply the configured action to the learner (stream/engine/drift_detection.py);
5. every ``eval_period`` samples (at the end of the batch that reaches the mark) evaluate on
   the test samples of seen classes.

A :class:`~learners.capabilities.SequentialLearner` (river models) does steps 2 and 3 per sample
instead: each sample is predicted just before it is learned, the classes shown earlier in the
stream, this batch included, allowed — river's own test-then-train, at any batch size.
Samples the learner cannot predict at all (every class scores ``-inf``: it knows none yet) are
left out of prequential accuracy, as river's ``progressive_val_score`` leaves them out.

On a single-level problem with no drift detector and no observer that reads hits
(:attr:`Observer.reads_hits`), nothing reads a batch's hits when it is learned: the loop keeps the scores of step 2 and counts hits and seen-class marks for
a run of batches at once (stream/engine/deferred_prequential.py), with the same results, before
anything reads them (an evaluation, ``seen``, ``prequential``, a summary or a checkpoint).

The loop knows nothing about where batches come from (file or Kafka) or where metrics go:
observers receive every batch and evaluation. Its whole state is JSON, so a checkpoint can carry
it next to the learner's tensors and the source offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator

from learners.base import Learner, Problem
from learners.capabilities import (
    DriftAction,
    FusedPrediction,
    SequentialLearner,
    supported_actions,
)
from learners.config_model import ConfigModel
from learners.levels import padded_scores
from stream.engine import metrics
from stream.engine.batch import Batch
from stream.engine.deferred_prequential import DeferredPrequential
from stream.engine.drift_detection import DriftConfig, DriftConfigError, DriftMonitor
from stream.engine.evaluation import AnytimeEvaluator, Evaluation
from stream.engine.evaluation_aggregates import EvaluationAggregates
from stream.engine.restored_values import restored_float, restored_integer
from stream.engine.seen_classes import SeenClasses
from stream.engine.validation import validate_batch

Taken = TypeVar("Taken")


# Drift positions a loop without its history (a daemon) keeps: the newest.
MAX_DRIFT_POSITIONS = 1000


MAX_BATCH = 1 << 16
"""The largest micro-batch (online continual learning uses 10 to 256): a daemon keeps the
samples of an unfilled batch in memory and in every checkpoint until it fills, so a batch the
topic never fills would grow them without bound."""

MAX_ONLINE_ITER = 1000
"""The most update steps per micro-batch a loop takes (the papers use 1 to 3; a thousand is
already far behind any stream, and infinity would overflow the step count)."""


class LoopConfig(ConfigModel):
    """How the loop feeds the learner and how often it evaluates."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    false_is_null = frozenset({"eval_period"})  # TOML has no null: false, task ends only

    batch_size: int = Field(
        16,
        gt=0,
        le=MAX_BATCH,
        description="stream samples per micro-batch (a daemon holds up to one batch unlearned)",
    )
    online_iter: float = Field(
        1.0,
        ge=0,
        le=MAX_ONLINE_ITER,
        description="update steps per micro-batch (fractions accumulate)",
    )
    eval_period: int | None = Field(
        1000, gt=0, description="evaluate every N samples; null (or false): task ends only"
    )
    prequential_windows: list[int] = Field(
        default_factory=lambda: [1000],
        min_length=1,
        description="rolling prequential accuracy windows",
    )
    eval_batch_size: int = Field(512, gt=0, le=MAX_BATCH)
    recent_evaluations: int = Field(
        16, gt=0, description="evaluations a daemon keeps in memory and checkpoints"
    )
    drift: DriftConfig | None = Field(
        None, description="drift detection on prequential errors; null: off"
    )

    @field_validator("prequential_windows")
    @classmethod
    def _distinct_positive(cls, windows: list[int]) -> list[int]:
        if (
            len(windows) > metrics.MAX_WINDOWS
            or min(windows) <= 0
            or max(windows) > metrics.MAX_WINDOW
            or len(set(windows)) != len(windows)
        ):
            raise ValueError(
                f"windows must be at most {metrics.MAX_WINDOWS} distinct sizes in "
                f"[1, {metrics.MAX_WINDOW:,}], got {windows}"
            )
        return windows


class Observer:
    """Receives what the loop does; every method is optional."""

    #: Whether :meth:`on_batch` reads ``hits``. Where no observer does (and no drift detector
    #: runs), the loop counts prequential accuracy a run of batches at a time and passes None
    #: (stream/engine/deferred_prequential.py); ``loop.prequential`` is up to date either way.
    reads_hits: bool = True

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray | None, learn_seconds: float
    ) -> None:
        """After a micro-batch was predicted and learned; ``hits``: which of its samples the
        prequential prediction got right (None where :attr:`reads_hits` is False)."""

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        """After an anytime (``kind="periodic"``) or task-end (``kind="task_end"``) evaluation."""

    def on_finish(self, loop: EventLoop) -> None:
        """After the stream ended and the last task-end evaluation was made."""


class EventLoop:
    """Drives one learner over a stream of micro-batches."""

    def __init__(
        self,
        learner: Learner,
        problem: Problem,
        config: LoopConfig | None = None,
        evaluator: AnytimeEvaluator | None = None,
        num_tasks: int | None = None,
        observers: Sequence[Observer] = (),
        learner_name: str | None = None,
        keep_history: bool = True,
    ) -> None:
        """``learner_name`` labels logs (default ``learner.name``); ``keep_history``: keep every
        evaluation in memory (a finite run, whose results list the curve), or only running
        aggregates (a daemon; stream/engine/evaluation_aggregates.py)."""
        self.learner = learner
        self.problem = problem
        self.config = config or LoopConfig()
        self.evaluator = evaluator
        self.num_tasks = num_tasks
        self.observers = list(observers)
        self.samples_seen = 0
        self._seen_classes = SeenClasses(problem.num_classes)
        self.current_task: int | None = None
        self.pending_updates = 0.0
        self.next_eval = self.config.eval_period or 0
        self._prequential_accuracy = metrics.PrequentialAccuracy(self.config.prequential_windows)
        # a hierarchy's per-level prequential accuracy and samples (results.json's per_level)
        self.level_counts = (
            metrics.LevelCounts(problem.num_levels) if problem.num_levels > 1 else None
        )
        self._sequential = learner if isinstance(learner, SequentialLearner) else None
        self._fused = learner if isinstance(learner, FusedPrediction) else None
        # single-level batches nothing reads one by one are counted a run at a time
        self._deferred = (
            DeferredPrequential(
                self._seen_classes, self._prequential_accuracy, problem.num_classes[0]
            )
            if problem.num_levels == 1 and self._sequential is None
            else None
        )
        self.drift: DriftMonitor | None = None
        if self.config.drift is not None:
            action = self.config.drift.action
            if action not in supported_actions(learner):
                supported = ", ".join(sorted(supported_actions(learner)))
                raise DriftConfigError(
                    f"learner {learner_name or learner.name!r} does not support drift action "
                    f"{action.value!r} (it supports: {supported})"
                )
            # a daemon keeps the newest positions (its log lines have every one)
            self.drift = DriftMonitor(
                self.config.drift,
                learner_name or learner.name,
                None if keep_history else MAX_DRIFT_POSITIONS,
            )
        self.evaluations = EvaluationAggregates(
            problem.num_classes, keep_history, self.config.recent_evaluations
        )
        self.learn_seconds = 0.0
        self.evaluation_seconds = 0.0
        self.finished = False

    # -- the loop -------------------------------------------------------------------------

    def run(self, batches: Iterable[Batch]) -> None:
        """Process every batch, then close the last task."""
        for batch in batches:
            self.process(batch)
        self.finish()

    def process(self, batch: Batch, served: np.ndarray | None = None) -> None:
        """Predict, then learn, one micro-batch; evaluate when a mark is reached.

        ``served``: labels that arrived after their samples were predicted (stream/engine/
        serving.py) carry the class served then (-1: none); prequential accuracy scores that
        prediction, the one a user got, instead of predicting again."""
        n = batch.y.shape[0]
        if n == 0:
            return
        if not batch.validated:
            validate_batch(batch, self.problem)
        task = batch.first_task()
        if task is not None and task != self.current_task:
            self._enter_task(task)
        self.pending_updates += self.config.online_iter
        iterations = int(self.pending_updates)
        self.pending_updates -= iterations
        deferred = self._deferred
        if (
            deferred is not None
            and served is None
            and n <= deferred.capacity
            and self.drift is None
            and (not self.observers or self._hits_unread())
        ):
            # nothing reads this batch's hits now: keep its scores for a later count (a fused
            # learner's scores are the loop's to keep, learners/capabilities.py)
            owned = self._fused is not None
            _, learn_seconds = self._predict_then_learn(
                batch, iterations, lambda scores: deferred.add(scores, batch.y, owned)
            )
            self.learn_seconds += learn_seconds
            self.samples_seen += n
            for observer in self.observers:
                observer.on_batch(self, batch, None, learn_seconds)
            self._evaluate_periodically()
            return
        hits: np.ndarray
        answered: np.ndarray | None
        if served is not None:
            answered = served >= 0
            hits = (served == batch.y.numpy()) & answered
            self.seen.mark_batch(batch.y.numpy(), batch.level.numpy())
            started = time.perf_counter()
            self.learner.learn(batch.x, batch.y, batch.level, iterations)
            learn_seconds = time.perf_counter() - started
        elif self._sequential is not None:
            started = time.perf_counter()
            predicted = self._sequential.test_then_train(batch.x, batch.y, batch.level, iterations)
            learn_seconds = time.perf_counter() - started
            hits, answered = self._sequential_hits(batch, predicted)
            self.seen.mark_batch(batch.y.numpy(), batch.level.numpy())
        else:
            (hits, answered), learn_seconds = self._predict_then_learn(
                batch, iterations, lambda scores: self._prequential(batch, scores)
            )
            self.seen.mark_batch(batch.y.numpy(), batch.level.numpy())
        self.learn_seconds += learn_seconds
        self.prequential.update(hits if answered is None else hits[answered])
        if self.level_counts is not None:
            self.level_counts.update(batch.level.numpy(), hits, answered)
        detected = self._watch_drift(hits, answered)
        self.samples_seen += n
        for observer in self.observers:
            observer.on_batch(self, batch, hits, learn_seconds)
        if detected and self.drift is not None and self.config.drift is not None:
            action = self.config.drift.action
            if action is not DriftAction.NONE:
                self.learner.on_drift(action)  # type: ignore[attr-defined]
        self._evaluate_periodically()

    def _hits_unread(self) -> bool:
        return not any(getattr(observer, "reads_hits", True) for observer in self.observers)

    def _predict_then_learn(
        self, batch: Batch, iterations: int, take: Callable[[torch.Tensor], Taken]
    ) -> tuple[Taken, float]:
        """Predict the batch before learning it, handing the scores (``[B, max classes]``, each
        row at its own level, padded with ``-inf``) to ``take`` before the learner changes (it
        may reuse the tensor): from a fused learner's one call, or from ``predict`` level by
        level before ``learn``. Returns what ``take`` returned and the seconds spent learning."""
        if self._fused is not None:
            started = time.perf_counter()
            scores = self._fused.predict_then_learn(batch.x, batch.y, batch.level, iterations)
            learn_seconds = time.perf_counter() - started
            return take(scores), learn_seconds
        predict = self.learner.predict
        taken = take(
            padded_scores(
                batch.level,
                self.problem.num_classes,
                len(batch.y),
                # every row (a slice) passes the batch's own tensor, which a learner may cache on
                lambda rows, level: predict(
                    batch.x if isinstance(rows, slice) else batch.x[rows], level
                ),
            )
        )
        started = time.perf_counter()
        self.learner.learn(batch.x, batch.y, batch.level, iterations)
        return taken, time.perf_counter() - started

    def _evaluate_periodically(self) -> None:
        if self.config.eval_period and self.samples_seen >= self.next_eval:
            period = self.config.eval_period
            self.next_eval = (self.samples_seen // period + 1) * period
            if self.evaluator is not None:
                self._evaluate("periodic")

    @property
    def seen(self) -> SeenClasses:
        """Classes shown by the stream so far, per level; predictions are masked to them."""
        self._count_deferred()
        return self._seen_classes

    @property
    def prequential(self) -> metrics.PrequentialAccuracy:
        """Prequential accuracy so far, cumulative and per rolling window."""
        self._count_deferred()
        return self._prequential_accuracy

    def _count_deferred(self) -> None:
        if self._deferred is not None and self._deferred.rows:
            self._deferred.flush()

    def finish(self) -> None:
        """Close the stream: task-end evaluation(s) for the last task and any empty ones after."""
        if self.finished:
            return
        self._count_deferred()
        if self.num_tasks:
            last = self.num_tasks - 1
        else:
            # Without task labels the whole stream is one task.
            last = self.current_task if self.current_task is not None else 0
        self._close_tasks(through=last, start=0 if self.current_task is None else None)
        self.finished = True
        for observer in self.observers:
            observer.on_finish(self)

    def masked_scores(self, x: torch.Tensor, level: int) -> np.ndarray:
        """The learner's scores for ``x`` at ``level`` with the classes the stream has not shown
        at ``-inf``: what a prediction served now is the argmax of."""
        return self.seen.masked(self.learner.predict(x, level), level)

    def _prequential(
        self, batch: Batch, scores: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Hits, and which samples the learner predicted at all (None: every one), from the
        batch's ``scores`` before it was learned (``[B, max classes]``, each row at its own
        level). Bookkeeping runs in numpy on views of the CPU tensors: cheaper per call than
        torch on micro-batches, and this runs on every batch."""
        y = batch.y.numpy()
        if self.problem.num_levels == 1:
            return self._hits(scores, y, 0)
        hits = np.zeros(len(y), dtype=bool)
        answered = np.zeros(len(y), dtype=bool)
        levels = batch.level.numpy()
        for level in np.unique(levels).tolist():
            rows = levels == level
            level_scores = scores[torch.from_numpy(rows), : self.problem.num_classes[level]]
            level_hits, level_answered = self._hits(level_scores, y[rows], level)
            hits[rows] = level_hits
            answered[rows] = True if level_answered is None else level_answered
        return hits, answered

    def _hits(
        self, scores: torch.Tensor, y: np.ndarray, level: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Right predictions among the seen classes, and which rows the learner predicted at
        all (None: every one); see :meth:`SeenClasses.argmax`."""
        predicted, answered = self.seen.argmax(scores, level)
        if answered is None:
            return predicted == y, None
        return (predicted == y) & answered, answered

    def _sequential_hits(
        self, batch: Batch, predicted: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Hits of per-sample predictions (-1: none). A learner predicts only classes it was
        taught, which the stream showed before; a hit on any other class is not counted.

        Plain Python over the batch's few rows: between river's per-sample work, each numpy
        call costs several times what it costs alone (measured in bench/river.py's setting)."""
        pred, y, level = predicted.tolist(), batch.y.tolist(), batch.level.tolist()
        seen = self.seen
        hits, answered = [], []
        for i, (p, label, lvl) in enumerate(zip(pred, y, level, strict=True)):
            answered.append(p >= 0)
            hit = p == label
            if hit and not seen[lvl][label]:  # the class first appears in this batch
                hit = any(y[j] == label and level[j] == lvl for j in range(i))
            hits.append(hit)
        return np.array(hits, dtype=bool), np.array(answered, dtype=bool)

    def _watch_drift(self, hits: np.ndarray, answered: np.ndarray | None) -> list[int]:
        if self.drift is None:
            return []
        rows = np.arange(len(hits)) if answered is None else np.flatnonzero(answered)
        errors = (~hits[rows]).astype(np.int8)
        return self.drift.update(errors, self.samples_seen + 1 + rows)

    def prequential_values(self) -> dict[str, float | None]:
        """Prequential accuracy by window label (``cumulative``, ``"1000"``, ...), for gauges."""
        return self.prequential.values()

    @property
    def drift_events(self) -> int:
        """Drift detections so far (0 while detection is off)."""
        return 0 if self.drift is None else self.drift.events

    # -- tasks and evaluations ------------------------------------------------------------

    def _enter_task(self, task: int) -> None:
        """A batch of ``task`` arrives while the loop is in another (or none yet)."""
        if self.current_task is None:
            # Tasks before the first non-empty one were empty: they end with nothing seen.
            self._close_tasks(through=task - 1, start=0)
        else:
            self._close_tasks(through=task - 1)
        self.current_task = task

    def _close_tasks(self, through: int, start: int | None = None) -> None:
        """Task-end evaluations for tasks ``start..through``; empty tasks repeat the result."""
        first = self.current_task if start is None else start
        if first is None or through < first:
            return
        evaluation = self._evaluate("task_end")
        if evaluation is None:
            return
        if through > first:
            self.evaluations.add(evaluation, "task_end", repeated=True, times=through - first)

    def _evaluate(self, kind: str) -> Evaluation | None:
        if self.evaluator is None:
            return None
        started = time.perf_counter()
        evaluation = self.evaluator.evaluate(self.learner, self.seen, self.samples_seen)
        self.evaluation_seconds += time.perf_counter() - started
        self.evaluations.add(evaluation, kind)
        for observer in self.observers:
            observer.on_evaluation(self, evaluation, kind)
        return evaluation

    # -- results --------------------------------------------------------------------------

    @property
    def last_evaluation(self) -> Evaluation | None:
        return self.evaluations.last

    def anytime_auc(self, level: int | None = None) -> float | None:
        """Running ``A_auc``, pooled over levels (``None``) or of one level."""
        return self.evaluations.mean("periodic", "all" if level is None else f"level{level}")

    def running_forgetting(self, level: int) -> float | None:
        """Forgetting now: each class's best accuracy so far minus its latest accuracy."""
        return self.evaluations.running_forgetting(level)

    def summary(self) -> dict[str, Any]:
        """The metrics of docs/metrics.md for the run so far, pooled over levels and (with a
        hierarchy) per level.
        Without ``keep_history`` the curve lists only the recent evaluations (the whole one is
        in the daemon's history file)."""
        ev = self.evaluations
        result: dict[str, Any] = {
            "A_auc": ev.mean("periodic", "all"),
            "A_avg": ev.mean("task_end", "all"),
            "A_last": ev.last_value("all"),
            "F_last": ev.forgetting(None),
        }
        result.update(
            prequential_accuracy=self.prequential.cumulative,
            prequential_accuracy_rolling=self.prequential.rolling,
            prequential_accuracy_windows={
                str(w): self.prequential.rolling_at(w) for w in self.prequential.windows
            },
            drift_events=self.drift_events,
            drift_positions=[] if self.drift is None else list(self.drift.positions),
            samples=self.samples_seen,
            curve=ev.curve_points("all"),
            task_end_accuracies=ev.task_end_accuracies(),
        )
        if self.problem.num_levels > 1:
            result["per_level"] = {
                name: self._level_summary(level)
                for level, name in enumerate(self.problem.level_names)
            }
        return result

    def _level_summary(self, level: int) -> dict[str, Any]:
        ev, series = self.evaluations, f"level{level}"
        summary: dict[str, Any] = {
            "A_auc": ev.mean("periodic", series),
            "A_avg": ev.mean("task_end", series),
            "A_last": ev.last_value(series),
            "F_last": ev.forgetting(level),
            "curve": ev.curve_points(series),
        }
        if self.level_counts is not None:
            summary.update(self.level_counts.values(level))
        if level < self.problem.num_levels - 1:
            either = f"either{level}"
            summary.update(
                A_auc_either=ev.mean("periodic", either),
                A_avg_either=ev.mean("task_end", either),
                A_last_either=ev.last_value(either),
            )
        return summary

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The loop's whole state, as JSON."""
        return {
            "samples_seen": self.samples_seen,
            "seen": self.seen.state_dict(),
            "current_task": self.current_task,
            "pending_updates": self.pending_updates,
            "next_eval": self.next_eval,
            "prequential": self.prequential.state_dict(),
            "level_prequential": None
            if self.level_counts is None
            else self.level_counts.state_dict(),
            "evaluations": self.evaluations.state_dict(),
            "learn_seconds": self.learn_seconds,
            "evaluation_seconds": self.evaluation_seconds,
            "finished": self.finished,
            "drift": None if self.drift is None else self.drift.state_dict(),
        }

    def absorb_counts(self, state: dict[str, Any]) -> None:
        """Add the samples and cumulative prequential counts of another loop's state (of
        :meth:`state_dict`, checked first: ``ValueError``) to this loop's: a scaled-out rank
        takes over those of a rank the smaller group no longer has. Nothing else is taken."""
        where = "loop state"
        samples = restored_integer(state["samples_seen"], where, "samples_seen", 0)
        prequential = metrics.PrequentialAccuracy()
        prequential.load_state_dict(state["prequential"])
        counts = None
        if self.level_counts is not None:
            counts = metrics.LevelCounts(self.problem.num_levels)
            counts.load_state_dict(state.get("level_prequential"))
        self.samples_seen += samples
        self.prequential.absorb(prequential)
        if self.level_counts is not None and counts is not None:
            self.level_counts.absorb(counts)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The state of :meth:`state_dict`; its numbers are checked (``ValueError``) before the
        loop takes them: a checkpoint is outside bytes, and a NaN in ``pending_updates`` would,
        for instance, fail every batch after the restore."""
        where = "loop state"
        self.samples_seen = restored_integer(state["samples_seen"], where, "samples_seen", 0)
        self.seen.load_state_dict(state["seen"])
        task = state["current_task"]
        self.current_task = None if task is None else restored_integer(task, where, "task", 0)
        self.pending_updates = restored_float(
            state["pending_updates"], where, "pending_updates", 0.0, 1.0
        )
        self.next_eval = restored_integer(state["next_eval"], where, "next_eval", 0)
        self.prequential.load_state_dict(state["prequential"])
        if self.level_counts is not None:
            self.level_counts.load_state_dict(state.get("level_prequential"))
        if "evaluations" in state:
            self.evaluations.load_state_dict(state["evaluations"])
        else:  # the layout before evaluation aggregates: every evaluation in the state
            self.evaluations.load_history(
                [Evaluation.from_json(e) for e in state["curve"]],
                [Evaluation.from_json(e) for e in state["task_ends"]],
                state["best_class_accuracy"],
                None
                if state["last_evaluation"] is None
                else Evaluation.from_json(state["last_evaluation"]),
            )
        self.learn_seconds = restored_float(state["learn_seconds"], where, "learn_seconds", 0.0)
        self.evaluation_seconds = restored_float(
            state.get("evaluation_seconds", 0.0), where, "evaluation_seconds", 0.0
        )
        self.finished = bool(state["finished"])
        if self.drift is not None:
            if state.get("drift") is None:
                raise ValueError(
                    "checkpoint has no drift detector state, but drift detection is configured"
                )
            self.drift.load_state_dict(state["drift"])
