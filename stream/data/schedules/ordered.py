"""Ordered schedule: the training split in dataset order, cut into T consecutive tasks.

Streams whose order is the point — river's generators with a concept drift at a known
position, recorded data streams — must not be shuffled or regrouped by class. Task ``t`` holds
samples ``[t * n // T, (t + 1) * n // T)``; the seed is recorded but changes nothing.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from stream.data.schedules.schedule import MAX_TASKS, Schedule, ScheduleParams


class OrderedParams(ScheduleParams):
    tasks: int = Field(1, ge=1, le=MAX_TASKS, description="number of consecutive tasks T")


def build(levels: np.ndarray, params: OrderedParams, seed: int) -> Schedule:
    n, finest = len(levels), levels.shape[1] - 1
    rows = np.arange(n, dtype=np.int64)
    bounds = [t * n // params.tasks for t in range(params.tasks + 1)]
    task = np.searchsorted(bounds[1:], rows, side="right").astype(np.int32)
    return Schedule(
        rows=rows,
        y=levels[:, finest].astype(np.int64),
        level=np.full(n, finest, dtype=np.int64),
        task=task,
        num_tasks=params.tasks,
        info={"task_bounds": bounds},
    )
