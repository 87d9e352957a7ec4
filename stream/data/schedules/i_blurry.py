"""i-Blurry-N-M (Koh et al., ICLR 2022, "Online Continual Learning on Class Incremental Blurry
Task Configuration with Anytime Inference").

N% of the classes are disjoint (each appears in one task only), the rest are blurry. Each task
holds its share of disjoint and of blurry classes; then M% of each task's blurry-class samples
(a seeded random subset) are dealt out evenly to the other tasks, so blurry classes appear in
every task with a dominant one. Class groups have equal sizes (the first tasks take the
remainder).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from stream.data.schedules.schedule import Schedule, ScheduleParams, concat_tasks, rows_of_classes


class IBlurryParams(ScheduleParams):
    disjoint: int = Field(50, ge=0, le=100, description="N: percent of classes that are disjoint")
    blurry: int = Field(10, ge=0, le=100, description="M: percent of blurry samples moved")


def build(levels: np.ndarray, params: IBlurryParams, seed: int) -> Schedule:
    labels, finest = levels[:, -1], levels.shape[1] - 1
    rng = np.random.default_rng(seed)
    T = params.tasks
    classes = rng.permutation(np.unique(labels))
    n_disjoint = len(classes) * params.disjoint // 100
    disjoint_groups = np.array_split(classes[:n_disjoint], T)
    blurry_groups = np.array_split(classes[n_disjoint:], T)
    task_rows = [rows_of_classes(labels, d).tolist() for d in disjoint_groups]
    moved_total = 0
    blurry_rows = [rng.permutation(rows_of_classes(labels, b)) for b in blurry_groups]
    kept: list[list[int]] = [[] for _ in range(T)]
    for t, rows in enumerate(blurry_rows):
        n_move = len(rows) * params.blurry // 100 if T > 1 else 0
        kept[t] += rows[n_move:].tolist()
        others = [o for o in range(T) if o != t]
        for o, part in zip(
            others, np.array_split(rows[:n_move], max(len(others), 1)), strict=False
        ):
            kept[o] += part.tolist()
        moved_total += n_move
    schedule = concat_tasks(
        [np.array(d + k) for d, k in zip(task_rows, kept, strict=True)], labels, finest, rng
    )
    schedule.info = {
        "disjoint_classes": [sorted(int(c) for c in g) for g in disjoint_groups],
        "blurry_classes": [sorted(int(c) for c in g) for g in blurry_groups],
        "moved_samples": moved_total,
    }
    return schedule
