"""What every schedule produces: the ordered events of a stream, as arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from learners.config_model import ConfigModel

MAX_TASKS = 100_000
"""Tasks a schedule may have: the bound a recorded stream's header holds (a larger count was
refused only when the stream was written, after the schedule was made)."""


class ScheduleParams(ConfigModel):
    """Base of every schedule's parameters; unknown keys are errors, and so is a boolean for a
    number (``blurry=true`` was read as a percent of 1)."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(5, ge=1, le=MAX_TASKS, description="number of tasks T")


@dataclass
class Schedule:
    """An ordered stream over a dataset's training split.

    ``rows[i]`` is the training row of event ``i``, shown with label ``y[i]`` of hierarchy level
    ``level[i]`` in task ``task[i]``. ``info`` records what the schedule decided (class groups,
    moved samples) for people and for the property tests.
    """

    rows: np.ndarray
    y: np.ndarray
    level: np.ndarray
    task: np.ndarray
    num_tasks: int
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def concat_tasks(
    task_rows: list[np.ndarray], labels: np.ndarray, level: int, rng: np.random.Generator
) -> Schedule:
    """Shuffle each task's rows and lay the tasks end to end, labelled at ``level``."""
    shuffled = [rng.permutation(np.asarray(rows, dtype=np.int64)) for rows in task_rows]
    rows = np.concatenate(shuffled) if shuffled else np.empty(0, dtype=np.int64)
    task = (
        np.concatenate([np.full(len(r), t, dtype=np.int32) for t, r in enumerate(shuffled)])
        if shuffled
        else np.empty(0, dtype=np.int32)
    )
    return Schedule(
        rows=rows,
        y=labels[rows].astype(np.int64),
        level=np.full(len(rows), level, dtype=np.int64),
        task=task,
        num_tasks=len(task_rows),
    )


def rows_of_classes(labels: np.ndarray, classes: list[int] | np.ndarray) -> np.ndarray:
    """Training rows (ascending) whose label is one of ``classes``."""
    return np.flatnonzero(np.isin(labels, np.asarray(classes, dtype=np.int64)))
