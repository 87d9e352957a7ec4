"""Evaluation metrics of online continual learning (docs/metrics.md), as in the i-Blurry and Si-Blurry
official code (naver-ai/i-Blurry ``main.py``, KHU-AGI/Si-Blurry ``methods/_trainer.py``).

- ``A_auc``: mean of the anytime accuracies measured every ``eval_period`` samples
  (the official code averages only those periodic points, not the task-end ones);
- ``A_avg``: mean of the task-end accuracies; ``A_last``: the last task-end accuracy;
- ``F_last``: mean over classes j of ``max_{k<T} acc_j(k) − acc_j(T)`` over the task ends k,
  for the classes whose best earlier accuracy is above 0;
- prequential accuracy: test-then-train accuracy on the stream itself, cumulative and over
  rolling windows (equal to river's ``Accuracy`` and ``Rolling`` metrics).

An accuracy over no test sample (no class seen yet) is ``None`` and is left out of the means.

>>> A_auc([0.5, 1.0, None])
0.75
>>> F_last(np.array([[1.0, 0.0], [0.5, 1.0], [0.25, 0.5]]))
0.625
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.engine.restored_values import restored_integer

MAX_WINDOW = 10_000_000
"""The largest rolling window: its ring holds one byte per prediction (10 MB here)."""
MAX_WINDOWS = 16


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def A_auc(anytime_accuracies: Sequence[float | None]) -> float | None:
    """Area under the anytime-accuracy curve, as the mean of its evaluations."""
    return _mean(anytime_accuracies)


def A_avg(task_end_accuracies: Sequence[float | None]) -> float | None:
    return _mean(task_end_accuracies)


def A_last(task_end_accuracies: Sequence[float | None]) -> float | None:
    return task_end_accuracies[-1] if task_end_accuracies else None


def F_last(class_accuracy: np.ndarray) -> float | None:
    """Forgetting at the end from per-class accuracies ``[task_ends, classes]``."""
    class_accuracy = np.asarray(class_accuracy, dtype=np.float64)
    if class_accuracy.ndim != 2 or class_accuracy.shape[0] < 2:
        return None
    best_before = class_accuracy[:-1].max(axis=0)
    forgotten = best_before > 0
    if not forgotten.any():
        return None
    return float(np.mean(best_before[forgotten] - class_accuracy[-1][forgotten]))


def running_forgetting(best: np.ndarray, current: np.ndarray) -> float | None:
    """Forgetting right now: mean of (best accuracy so far − current) over classes with best > 0."""
    mask = best > 0
    if not mask.any():
        return None
    return float(np.mean(best[mask] - current[mask]))


class PrequentialAccuracy:
    """Test-then-train accuracy, cumulative and over the last ``w`` predictions per window ``w``.

    Only samples the learner made a prediction for are counted: a learner that knows no class
    yet abstains, and river's ``progressive_val_score`` skips such samples too. The values equal
    river's ``metrics.Accuracy`` and ``utils.Rolling(metrics.Accuracy, window_size=w)`` fed the
    same predictions (tests/stream/engine/test_metrics.py checks this exactly), but cost one slice
    write per micro-batch instead of a Python call per sample and window: every window reads
    one ring buffer of the last ``max(windows)`` hits.

    >>> p = PrequentialAccuracy(windows=(2, 4))
    >>> p.update(np.array([True, False, True, True]))
    >>> p.values()
    {'cumulative': 0.75, '2': 1.0, '4': 0.75}
    """

    def __init__(self, windows: int | Sequence[int] = (1000,)) -> None:
        self._start(windows)

    def _start(self, windows: int | Sequence[int]) -> None:
        windows = (int(windows),) if isinstance(windows, int) else tuple(int(w) for w in windows)
        if (
            not 1 <= len(windows) <= MAX_WINDOWS
            or min(windows) <= 0
            or max(windows) > MAX_WINDOW
            or len(set(windows)) != len(windows)
        ):
            raise ValueError(
                f"prequential windows must be 1 to {MAX_WINDOWS} distinct sizes in "
                f"[1, {MAX_WINDOW:,}], got {windows}"
            )
        self.windows = windows
        self.correct = 0
        self.total = 0
        self._capacity = max(windows)
        self._ring = np.zeros(self._capacity, dtype=bool)
        self._position = 0

    def update(self, hits: np.ndarray) -> None:
        """Count one hit (True) or miss (False) per predicted sample, in stream order."""
        hits = np.asarray(hits, dtype=bool)
        self.correct += int(np.count_nonzero(hits))
        self.total += len(hits)
        capacity = self._capacity
        end = self._position + len(hits)
        if len(hits) >= capacity:
            # the ring where per-sample updates would have left it: the state (and so a
            # checkpoint) does not depend on how the hits were cut into calls
            position = self._position = end % capacity
            last = hits[-capacity:]
            self._ring[position:] = last[: capacity - position]
            self._ring[:position] = last[capacity - position :]
            return
        if end <= capacity:
            self._ring[self._position : end] = hits
        else:
            split = capacity - self._position
            self._ring[self._position :] = hits[:split]
            self._ring[: end - capacity] = hits[split:]
        self._position = end % capacity

    @property
    def cumulative(self) -> float | None:
        return self.correct / self.total if self.total else None

    def rolling_at(self, window: int) -> float | None:
        """Accuracy over the last ``window`` predictions (fewer while the stream is shorter)."""
        if window not in self.windows:
            raise KeyError(f"no prequential window {window}; windows: {self.windows}")
        filled = min(self.total, window)
        if not filled:
            return None
        position = self._position
        if filled <= position:
            correct = int(self._ring[position - filled : position].sum())
        else:
            wrapped = filled - position
            tail = self._ring[self._capacity - wrapped :]
            correct = int(self._ring[:position].sum()) + int(tail.sum())
        return correct / filled

    @property
    def rolling(self) -> float | None:
        """The first window's rolling accuracy."""
        return self.rolling_at(self.windows[0])

    def values(self) -> dict[str, float | None]:
        """``{"cumulative": ..., "<window>": ...}``: the prequential gauges, by window label."""
        return {"cumulative": self.cumulative, **{str(w): self.rolling_at(w) for w in self.windows}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "windows": list(self.windows),
            "correct": self.correct,
            "total": self.total,
            "ring": np.flatnonzero(self._ring).tolist(),
            "position": self._position,
        }

    def absorb(self, other: PrequentialAccuracy) -> None:
        """Add ``other``'s cumulative counts to this one's (another process's predictions of
        the same model); the rolling windows stay this one's last predictions."""
        self.correct += other.correct
        self.total += other.total

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The accumulator of :meth:`state_dict`, checked first (``ValueError``)."""
        where = "prequential accuracy"
        windows = state["windows"]
        if not isinstance(windows, list) or not 1 <= len(windows) <= MAX_WINDOWS:
            raise ValueError(f"{where}: not a list of at most {MAX_WINDOWS} windows")
        windows = [restored_integer(w, where, "window", 1, MAX_WINDOW + 1) for w in windows]
        total = restored_integer(state["total"], where, "total", 0)
        correct = restored_integer(state["correct"], where, "correct", 0, total + 1)
        capacity = max(windows)
        ring = state["ring"]
        if not isinstance(ring, list) or len(ring) > capacity:
            raise ValueError(f"{where}: the hits of the ring are not a list of positions")
        hits = [restored_integer(i, where, "ring position", 0, capacity) for i in ring]
        position = restored_integer(state["position"], where, "position", 0, capacity)
        self._start(windows)
        self.correct, self.total = correct, total
        self._ring[np.asarray(hits, dtype=np.int64)] = True
        self._position = position


class LevelCounts:
    """Per hierarchy level: the stream samples at that level, and how many of those the
    learner predicted (``total``) and got right (``correct``), for ``per_level`` in
    results.json. The pooled :class:`PrequentialAccuracy` counts the same predictions over
    every level.

    >>> counts = LevelCounts(2)
    >>> counts.update(np.array([0, 1, 1]), np.array([True, True, False]), None)
    >>> counts.values(1)
    {'prequential_accuracy': 0.5, 'samples': 2}
    """

    def __init__(self, num_levels: int) -> None:
        self.samples = np.zeros(num_levels, dtype=np.int64)
        self.total = np.zeros(num_levels, dtype=np.int64)
        self.correct = np.zeros(num_levels, dtype=np.int64)
        # False after restoring a checkpoint written before these counts were kept: they
        # would then cover only part of the stream, so they are reported as unknown
        self.known = True

    def update(self, levels: np.ndarray, hits: np.ndarray, answered: np.ndarray | None) -> None:
        """One micro-batch: each row's level, whether its prediction was right, and whether a
        prediction was made for it (None: for every row)."""
        size = len(self.samples)
        hits = np.asarray(hits, dtype=bool)
        per_level = np.bincount(levels, minlength=size)
        self.samples += per_level
        if answered is None:
            self.total += per_level
            self.correct += np.bincount(levels[hits], minlength=size)
        else:
            self.total += np.bincount(levels[answered], minlength=size)
            self.correct += np.bincount(levels[hits & answered], minlength=size)

    def values(self, level: int) -> dict[str, float | int | None]:
        if not self.known:
            return {"prequential_accuracy": None, "samples": None}
        total = int(self.total[level])
        return {
            "prequential_accuracy": int(self.correct[level]) / total if total else None,
            "samples": int(self.samples[level]),
        }

    def absorb(self, other: LevelCounts) -> None:
        """Add ``other``'s counts (another process's samples of the same model)."""
        self.samples += other.samples
        self.total += other.total
        self.correct += other.correct
        self.known = self.known and other.known

    def state_dict(self) -> dict[str, Any] | None:
        """The counts, or None while they are unknown (so a later restore still says so)."""
        if not self.known:
            return None
        return {
            "samples": self.samples.tolist(),
            "total": self.total.tolist(),
            "correct": self.correct.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """The counts of :meth:`state_dict`, checked first (``ValueError``); None (a
        checkpoint from before these counts) leaves them unknown."""
        size = len(self.samples)
        if state is None:
            self.samples[:], self.total[:], self.correct[:] = 0, 0, 0
            self.known = False
            return
        where = "per-level prequential counts"
        if not isinstance(state, dict):
            raise ValueError(f"{where}: not an object")
        columns = {}
        for key in ("samples", "total", "correct"):
            raw = state.get(key)
            if not isinstance(raw, list) or len(raw) != size:
                raise ValueError(f"{where}: {key} is not a list of {size} counts")
            columns[key] = [restored_integer(v, where, key, 0) for v in raw]
        for level in range(size):
            samples, total = columns["samples"][level], columns["total"][level]
            if not columns["correct"][level] <= total <= samples:
                raise ValueError(
                    f"{where}: level {level} has correct <= total <= samples broken "
                    f"({columns['correct'][level]}, {total}, {samples})"
                )
        self.samples[:] = columns["samples"]
        self.total[:] = columns["total"]
        self.correct[:] = columns["correct"]
        self.known = True
