"""Disjoint class-incremental schedule: classes split into T groups, one task each.

The class order is a seeded permutation; with C not divisible by T the first ``C mod T`` tasks
get one class more.
"""

from __future__ import annotations

import numpy as np

from stream.data.schedules.schedule import Schedule, ScheduleParams, concat_tasks, rows_of_classes


class DisjointParams(ScheduleParams):
    pass


def build(levels: np.ndarray, params: DisjointParams, seed: int) -> Schedule:
    labels, finest = levels[:, -1], levels.shape[1] - 1
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if params.tasks > len(classes):
        raise ValueError(f"disjoint: {params.tasks} tasks but only {len(classes)} classes")
    groups = np.array_split(rng.permutation(classes), params.tasks)
    schedule = concat_tasks([rows_of_classes(labels, g) for g in groups], labels, finest, rng)
    schedule.info = {"task_classes": [sorted(int(c) for c in g) for g in groups]}
    return schedule
