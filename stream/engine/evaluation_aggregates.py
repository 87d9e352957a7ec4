"""What the event loop keeps of its evaluations: running aggregates, not the history.

A daemon evaluates every ``eval_period`` samples for months; keeping every evaluation (with its
per-class accuracies) grows memory and every checkpoint without bound. So the loop keeps only:

- per series (pooled, each level, each level's ``either`` accuracy) the running sum and count of
  the periodic accuracies (``A_auc``) and of the task-end accuracies (``A_avg``);
- the last task-end evaluation (``A_last``) and, per level, each class's best accuracy at the
  task ends before it (``F_last``: max is exact, so this equals the formula over all task ends);
- each class's best accuracy at any evaluation (running forgetting) and the last evaluation;
- the last ``recent`` evaluations.

The full history goes to an append-only file next to the checkpoints
(stream/daemon/evaluation_history.py). A finite run (``streamcl replay``) also keeps the whole
curve and the task ends (``keep_history``): its ``results.json`` lists the curve, and its means
are then taken over the lists exactly as ``stream.engine.metrics`` defines them, so results do
not depend on how the run was summarised. Without the lists, a mean is the running sum over the
count, which may differ from numpy's pairwise mean in the last bits.

>>> from stream.engine.evaluation import Evaluation
>>> agg = EvaluationAggregates([2], keep_history=False)
>>> for acc in (0.5, 1.0):
...     agg.add(Evaluation(1, acc, [acc], [np.array([acc, 0.0])]), "periodic")
>>> agg.mean("periodic", "all")
0.75
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.engine import metrics
from stream.engine.evaluation import Evaluation

KINDS = ("periodic", "task_end")


def _series(evaluation: Evaluation) -> dict[str, float | None]:
    """Every accuracy of one evaluation by series name: ``all``, ``level<i>``, ``either<i>``."""
    values: dict[str, float | None] = {"all": evaluation.accuracy}
    for level, acc in enumerate(evaluation.level_accuracy):
        values[f"level{level}"] = acc
    for level, acc in enumerate(evaluation.either_accuracy):
        values[f"either{level}"] = acc
    return values


class EvaluationAggregates:
    """Running aggregates of a loop's evaluations, by kind (``periodic`` or ``task_end``)."""

    def __init__(
        self, num_classes: Sequence[int], keep_history: bool = True, recent: int = 16
    ) -> None:
        if recent < 1:
            raise ValueError(f"recent must be >= 1, got {recent}")
        self.num_classes = tuple(num_classes)
        self.keep_history = keep_history
        self.recent_size = recent
        self._start()

    def _start(self) -> None:
        self.counts = {kind: 0 for kind in KINDS}
        # series -> [sum, count] of the accuracies that were measured (not None)
        self.sums: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
        self.last_task_end: Evaluation | None = None
        self.best_before_last = [np.zeros(k) for k in self.num_classes]
        self.best_class_accuracy = [np.zeros(k) for k in self.num_classes]
        self.last: Evaluation | None = None
        self.recent: deque[tuple[str, Evaluation]] = deque(maxlen=self.recent_size)
        self.curve: list[Evaluation] = []
        self.task_ends: list[Evaluation] = []

    def add(
        self, evaluation: Evaluation, kind: str, repeated: bool = False, times: int = 1
    ) -> None:
        """Count one evaluation; ``repeated``: the task ends of ``times`` empty tasks, which
        repeat the previous result for the metrics without being new measurements (counted in
        one step, whatever ``times``: task ids come from outside)."""
        if kind not in KINDS:
            raise ValueError(f"evaluation kind must be one of {KINDS}, got {kind!r}")
        if times < 1 or (times > 1 and not (repeated and kind == "task_end")):
            raise ValueError(f"only empty tasks' task ends repeat, got times={times}")
        self.counts[kind] += times
        sums = self.sums[kind]
        for name, value in _series(evaluation).items():
            if value is not None:
                total = sums.setdefault(name, [0.0, 0])
                total[0] += value if times == 1 else value * times
                total[1] += times
        if kind == "task_end":
            if self.last_task_end is not None:
                for best, before in zip(
                    self.best_before_last, self.last_task_end.class_accuracy, strict=True
                ):
                    np.maximum(best, before, out=best)
            self.last_task_end = evaluation
        if self.keep_history:
            (self.curve if kind == "periodic" else self.task_ends).extend([evaluation] * times)
        if repeated:
            return
        for best, per_class in zip(
            self.best_class_accuracy, evaluation.class_accuracy, strict=True
        ):
            np.maximum(best, per_class, out=best)
        self.last = evaluation
        self.recent.append((kind, evaluation))

    # -- the metrics ----------------------------------------------------------------------

    def _accuracies(self, kind: str, series: str) -> list[float | None]:
        evaluations = self.curve if kind == "periodic" else self.task_ends
        return [_series(e)[series] for e in evaluations]

    def mean(self, kind: str, series: str) -> float | None:
        """``A_auc`` (periodic) or ``A_avg`` (task_end) of one series."""
        if self.keep_history:
            return metrics.A_auc(self._accuracies(kind, series))
        total = self.sums[kind].get(series)
        return total[0] / total[1] if total else None

    def last_value(self, series: str) -> float | None:
        """``A_last`` of one series: its value at the last task end."""
        if self.last_task_end is None:
            return None
        return _series(self.last_task_end)[series]

    def forgetting(self, level: int | None) -> float | None:
        """``F_last`` of one level, or pooled over the levels (``None``)."""
        if self.counts["task_end"] < 2 or self.last_task_end is None:
            return None
        levels = range(len(self.num_classes)) if level is None else [level]
        best = np.concatenate([self.best_before_last[i] for i in levels])
        last = np.concatenate([self.last_task_end.class_accuracy[i] for i in levels])
        return metrics.F_last(np.stack([best, last]))

    def running_forgetting(self, level: int) -> float | None:
        """Forgetting now: each class's best accuracy so far minus its latest accuracy."""
        if self.last is None:
            return None
        return metrics.running_forgetting(
            self.best_class_accuracy[level], self.last.class_accuracy[level]
        )

    def curve_points(self, series: str) -> list[list[Any]]:
        """``[samples_seen, accuracy]`` of the periodic evaluations kept: all of them with
        ``keep_history``, else the recent ones."""
        evaluations = (
            self.curve if self.keep_history else [e for k, e in self.recent if k == "periodic"]
        )
        return [[e.samples_seen, _series(e)[series]] for e in evaluations]

    def task_end_accuracies(self) -> list[float | None]:
        if self.keep_history:
            return [e.accuracy for e in self.task_ends]
        return [e.accuracy for k, e in self.recent if k == "task_end"]

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "counts": dict(self.counts),
            "sums": {
                kind: {k: list(v) for k, v in sums.items()} for kind, sums in self.sums.items()
            },
            "last_task_end": None if self.last_task_end is None else self.last_task_end.to_json(),
            "best_before_last": [b.tolist() for b in self.best_before_last],
            "best_class_accuracy": [b.tolist() for b in self.best_class_accuracy],
            "last": None if self.last is None else self.last.to_json(),
            "recent": [[kind, e.to_json()] for kind, e in self.recent],
        }
        if self.keep_history:
            state["curve"] = [e.to_json() for e in self.curve]
            state["task_ends"] = [e.to_json() for e in self.task_ends]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start()
        self.counts = {kind: int(state["counts"][kind]) for kind in KINDS}
        self.sums = {
            kind: {str(k): [float(v[0]), int(v[1])] for k, v in state["sums"][kind].items()}
            for kind in KINDS
        }
        last_task_end = state["last_task_end"]
        self.last_task_end = None if last_task_end is None else Evaluation.from_json(last_task_end)
        self.best_before_last = self._per_level(state["best_before_last"])
        self.best_class_accuracy = self._per_level(state["best_class_accuracy"])
        self.last = None if state["last"] is None else Evaluation.from_json(state["last"])
        for kind, raw in state["recent"]:
            self.recent.append((str(kind), Evaluation.from_json(raw)))
        if self.keep_history:
            if "curve" not in state:
                raise ValueError("evaluation state has no history, but this run keeps it")
            self.curve = [Evaluation.from_json(e) for e in state["curve"]]
            self.task_ends = [Evaluation.from_json(e) for e in state["task_ends"]]

    def load_history(
        self,
        curve: list[Evaluation],
        task_ends: list[Evaluation],
        best_class_accuracy: list[list[float]],
        last: Evaluation | None,
    ) -> None:
        """Start from a whole history (a loop state from before these aggregates): the periodic
        and task-end evaluations, each in order, with each class's best accuracy and the last
        evaluation as that state kept them."""
        self._start()
        merged = sorted(
            [(e.samples_seen, 0, "periodic", e) for e in curve]
            + [(e.samples_seen, 1, "task_end", e) for e in task_ends],
            key=lambda item: item[:2],
        )
        for _, _, kind, evaluation in merged:
            self.add(evaluation, kind)
        self.best_class_accuracy = self._per_level(best_class_accuracy)
        self.last = last

    def _per_level(self, raw: list[list[float]]) -> list[np.ndarray]:
        arrays = [np.asarray(values, dtype=np.float64) for values in raw]
        if [len(a) for a in arrays] != list(self.num_classes):
            raise ValueError(
                f"evaluation state has per-class accuracies for {[len(a) for a in arrays]} "
                f"classes, the problem has {list(self.num_classes)}"
            )
        return arrays
