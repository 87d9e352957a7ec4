"""Evaluation metrics of online continual learning (SPEC §4), as in the i-Blurry and Si-Blurry
official code (naver-ai/i-Blurry ``main.py``, KHU-AGI/Si-Blurry ``methods/_trainer.py``).

- ``A_auc``: mean of the anytime accuracies measured every ``eval_period`` samples
  (the official code averages only those periodic points, not the task-end ones);
- ``A_avg``: mean of the task-end accuracies; ``A_last``: the last task-end accuracy;
- ``F_last``: mean over classes j of ``max_{k<T} acc_j(k) − acc_j(T)`` over the task ends k,
  for the classes whose best earlier accuracy is above 0;
- prequential accuracy: test-then-train accuracy on the stream itself, cumulative and over a
  rolling window.

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
    """Test-then-train accuracy, cumulative and over the last ``window`` samples.

    The window is a ring buffer of per-sample hits, so a micro-batch costs one slice write.
    """

    def __init__(self, window: int = 1000) -> None:
        if window <= 0:
            raise ValueError(f"prequential window must be positive, got {window}")
        self.window = window
        self.correct = 0
        self.total = 0
        self._ring = np.zeros(window, dtype=bool)
        self._position = 0

    def update(self, hits: np.ndarray) -> None:
        hits = np.asarray(hits, dtype=bool)
        self.correct += int(hits.sum())
        self.total += len(hits)
        if len(hits) >= self.window:
            self._ring[:] = hits[-self.window :]
            self._position = 0
            return
        end = self._position + len(hits)
        if end <= self.window:
            self._ring[self._position : end] = hits
        else:
            split = self.window - self._position
            self._ring[self._position :] = hits[:split]
            self._ring[: end - self.window] = hits[split:]
        self._position = end % self.window

    @property
    def cumulative(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def rolling(self) -> float | None:
        filled = min(self.total, self.window)
        return float(self._ring.sum()) / filled if filled else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "correct": self.correct,
            "total": self.total,
            "ring": np.flatnonzero(self._ring).tolist(),
            "position": self._position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = int(state["window"])
        self.correct, self.total = int(state["correct"]), int(state["total"])
        self._ring = np.zeros(self.window, dtype=bool)
        self._ring[np.asarray(state["ring"], dtype=np.int64)] = True
        self._position = int(state["position"])
