"""Hierarchical label expansion (HLE; Lee et al., ICCV 2023, "Online Continual Learning on
Hierarchical Label Expansion"), following the stream files the official code (Hyun1A/HLE) ships
in ``data/collections`` — the generator itself is not released.

Labels first arrive at the coarsest level and later expand to finer ones:

- ``single`` (the paper's single-label scenario, ``cifar100_hier_setup2``): every sample appears
  once. Task 0 holds ``floor(n_c / T)`` samples of every finest class ``c`` (``coarse_share``
  changes the share), labelled at level 0. The coarse classes are cut into ``T − 1`` groups of a
  seeded permutation; task ``t ≥ 1`` holds the remaining samples of the finest classes under
  group ``t − 1``, labelled at the finest level.
- ``dual`` (dual-label, ``cifar100_hier_setup1``): every sample appears twice, in task 0 with its
  level-0 label and later, in its group's task, with its finest label.
- ``multi-depth`` (``cifar100_scene_topdown``): one task per level, coarse to fine; each finest
  class's samples are split into ``L`` near-equal seeded parts, part ``l`` labelled at level
  ``l`` in task ``l``. Every sample appears once.

``single`` and ``dual`` use the coarsest and the finest level (the paper's datasets have two).
``blurry`` (M) mixes within a level as i-Blurry does: M% of each task's samples, a seeded
subset, are dealt out evenly to the other tasks of the same level (the fine tasks; the official
collections are all M = 0). Each task is shuffled. ``T`` defaults to 1 + min(5, #coarse classes)
for ``single``/``dual`` (the paper's CIFAR-100 setting: one coarse and five fine tasks) and to
``L`` for ``multi-depth``. Randomness is numpy's PCG64 seeded with ``seed``.
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator

from stream.data.schedules.schedule import MAX_TASKS, Schedule, ScheduleParams

DEFAULT_FINE_TASKS = 5


class HLEParams(ScheduleParams):
    scenario: Literal["single", "dual", "multi-depth"] = Field(
        "single", description="single-label, dual-label or multi-depth label expansion"
    )
    tasks: int | None = Field(  # type: ignore[assignment]
        None,
        ge=2,
        le=MAX_TASKS,
        description="T; default 1 + min(5, #coarse) (single, dual) or L (multi-depth)",
    )
    blurry: int = Field(
        0,
        ge=0,
        le=100,
        description="M: percent of a task's samples mixed into the other tasks of its level",
    )
    coarse_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="single: share of each fine class labelled coarse in task 0 (default 1/T)",
    )

    @model_validator(mode="after")
    def _share_of_single_only(self) -> Self:
        # dual labels every sample coarse in task 0, and multi-depth splits each class into
        # one part per level: a share was recorded in the header and changed nothing
        if self.coarse_share is not None and self.scenario != "single":
            raise ValueError(
                f"coarse_share applies to the single scenario only; {self.scenario} has no "
                "share to set"
            )
        return self


def build(levels: np.ndarray, params: HLEParams, seed: int) -> Schedule:
    depth = levels.shape[1]
    if depth < 2:
        raise ValueError(
            "hle needs a dataset with hierarchy levels (y_*_levels with at least 2 columns, "
            "e.g. cifar100:DIR or synthetic-hierarchy)"
        )
    rng = np.random.default_rng(seed)
    if params.scenario == "multi-depth":
        tasks, info = _multi_depth(levels, params, rng)
    else:
        tasks, info = _label_expansion(levels, params, rng)
    schedule = _assemble(tasks, levels, rng)
    schedule.info = {"scenario": params.scenario, "task_levels": [lvl for _, lvl in tasks], **info}
    return schedule


def _label_expansion(
    levels: np.ndarray, params: HLEParams, rng: np.random.Generator
) -> tuple[list[tuple[np.ndarray, int]], dict[str, object]]:
    """``single`` and ``dual``: a coarse task 0, then fine tasks by groups of coarse classes."""
    coarse, fine, finest = levels[:, 0], levels[:, -1], levels.shape[1] - 1
    coarse_classes = np.unique(coarse)
    n_tasks = params.tasks or 1 + min(DEFAULT_FINE_TASKS, len(coarse_classes))
    if n_tasks - 1 > len(coarse_classes):
        raise ValueError(
            f"hle {params.scenario}: {n_tasks} tasks need {n_tasks - 1} groups of coarse classes, "
            f"but the dataset has {len(coarse_classes)} coarse classes"
        )
    groups = np.array_split(rng.permutation(coarse_classes), n_tasks - 1)
    group_of = np.empty(int(coarse_classes.max()) + 1, dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g

    first: list[np.ndarray] = []
    later: list[list[np.ndarray]] = [[] for _ in groups]
    for c in np.unique(fine):
        rows = rng.permutation(np.flatnonzero(fine == c))
        if params.scenario == "dual":
            first.append(rows)
            rest = rows
        else:
            taken = (
                len(rows) // n_tasks
                if params.coarse_share is None
                else int(len(rows) * params.coarse_share)
            )
            first.append(rows[:taken])
            rest = rows[taken:]
        later[group_of[coarse[rows[0]]]].append(rest)
    fine_tasks = [np.concatenate(parts) for parts in later]
    fine_tasks, moved = _mix_within_level(fine_tasks, params.blurry, rng)
    tasks = [(np.concatenate(first), 0)] + [(rows, finest) for rows in fine_tasks]
    info: dict[str, object] = {
        "task_coarse_classes": [None] + [sorted(int(c) for c in g) for g in groups],
        "moved_samples": moved,
    }
    if params.scenario == "single":
        info["coarse_share"] = (
            params.coarse_share if params.coarse_share is not None else 1 / n_tasks
        )
    return tasks, info


def _multi_depth(
    levels: np.ndarray, params: HLEParams, rng: np.random.Generator
) -> tuple[list[tuple[np.ndarray, int]], dict[str, object]]:
    """One task per level: each finest class split into ``L`` parts, part ``l`` at level ``l``."""
    depth = levels.shape[1]
    if params.tasks not in (None, depth):
        raise ValueError(
            f"hle multi-depth has one task per level: tasks must be {depth}, got {params.tasks}"
        )
    if params.blurry:
        raise ValueError(
            "hle multi-depth has one task per level, so nothing can mix within a level; "
            "use blurry=0"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(depth)]
    fine = levels[:, -1]
    for c in np.unique(fine):
        rows = rng.permutation(np.flatnonzero(fine == c))
        for lvl, part in enumerate(np.array_split(rows, depth)):
            parts[lvl].append(part)
    return [(np.concatenate(p), lvl) for lvl, p in enumerate(parts)], {"moved_samples": 0}


def _mix_within_level(
    tasks: list[np.ndarray], blurry: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], int]:
    """i-Blurry's M% mix among tasks of one level: each gives a seeded M% to the others, evenly."""
    if blurry == 0:
        return tasks, 0
    if len(tasks) < 2:
        raise ValueError(
            "hle blurry mixing needs at least two tasks at the fine level (tasks >= 3)"
        )
    kept: list[list[np.ndarray]] = [[] for _ in tasks]
    moved = 0
    for t, rows in enumerate(tasks):
        rows = rng.permutation(rows)
        n_move = len(rows) * blurry // 100
        kept[t].append(rows[n_move:])
        others = [o for o in range(len(tasks)) if o != t]
        for o, part in zip(others, np.array_split(rows[:n_move], len(others)), strict=True):
            kept[o].append(part)
        moved += n_move
    return [np.concatenate(parts) for parts in kept], moved


def _assemble(
    tasks: list[tuple[np.ndarray, int]], levels: np.ndarray, rng: np.random.Generator
) -> Schedule:
    """Shuffle each task and lay the tasks end to end, each event labelled at its task's level."""
    rows, level, task = [], [], []
    for t, (task_rows, lvl) in enumerate(tasks):
        shuffled = rng.permutation(np.asarray(task_rows, dtype=np.int64))
        rows.append(shuffled)
        level.append(np.full(len(shuffled), lvl, dtype=np.int64))
        task.append(np.full(len(shuffled), t, dtype=np.int32))
    all_rows, all_levels = np.concatenate(rows), np.concatenate(level)
    return Schedule(
        rows=all_rows,
        y=levels[all_rows, all_levels].astype(np.int64),
        level=all_levels,
        task=np.concatenate(task),
        num_tasks=len(tasks),
    )
