"""Si-Blurry (Moon et al., ICCV 2023, "Online Continual Learning on Stochastic Incremental
Blurry Task Boundaries"), following ``OnlineSampler(varing_NM=True)`` of KHU-AGI/Si-Blurry.

1. D = floor(C·N/100) disjoint and B = C − D blurry classes, each rounded down to a multiple of
   T (as the official code does; classes left over are dropped and listed in ``info``). That
   drops C mod T classes, so a T that divides C keeps them all (``tasks_keeping_every_class``).
2. A seeded class permutation; the disjoint classes are cut into T groups at T−1 sorted uniform
   random cut points, the blurry classes likewise, so tasks get uneven, possibly empty, class sets.
3. Every sample goes to the task that owns its class.
4. nb = (#blurry-class samples)·M/100 is cut into T quotas at random sorted cut points; each task
   gives up to its quota of its blurry samples to a pool, the pool is shuffled and dealt back by
   the same quotas in task order; each task is shuffled.

Deviations from the official code, on purpose:
- the samples a task gives up are a seeded random subset of its blurry samples, not the first
  ones in dataset file order (which depends on how the file happens to be sorted);
- the non-stochastic variant (``stochastic: false``, ``varing_NM=False`` there) deals the pool
  with ``array_split`` so the ``len(pool) mod T`` samples the official code drops are kept.
Randomness is numpy's PCG64 seeded with ``seed``, so streams match across machines but not the
official code's torch-generated streams.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from stream.data.schedules.schedule import Schedule, ScheduleParams, concat_tasks, rows_of_classes


class SiBlurryParams(ScheduleParams):
    disjoint: int = Field(50, ge=0, le=100, description="N: percent of classes that are disjoint")
    blurry: int = Field(10, ge=0, le=100, description="M: percent of blurry samples mixed")
    stochastic: bool = Field(
        True, description="random task sizes (Si-Blurry); false: i-Blurry-like"
    )


def tasks_keeping_every_class(classes: int, tasks: int) -> int:
    """The task count nearest ``tasks`` (the larger on a tie) that divides ``classes``, so that
    no class is dropped.

    >>> tasks_keeping_every_class(7, 5), tasks_keeping_every_class(3, 5), tasks_keeping_every_class(100, 3)
    (7, 3, 4)
    """
    small = [t for t in range(1, math.isqrt(classes) + 1) if classes % t == 0]
    divisors = small + [classes // t for t in small]
    return min(divisors, key=lambda t: (abs(t - tasks), -t))


def _random_cuts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Boundaries ``[0, c_1, ..., c_{T-1}, total]`` with sorted uniform cut points."""
    if total == 0:
        return np.zeros(parts + 1, dtype=np.int64)
    cuts = np.sort(rng.integers(0, total, size=parts - 1))
    return np.concatenate([[0], cuts, [total]]).astype(np.int64)


def _even_cuts(total: int, parts: int) -> np.ndarray:
    sizes = [len(a) for a in np.array_split(np.arange(total), parts)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def build(levels: np.ndarray, params: SiBlurryParams, seed: int) -> Schedule:
    labels, finest = levels[:, -1], levels.shape[1] - 1
    rng = np.random.default_rng(seed)
    T = params.tasks
    classes = np.unique(labels)
    n_disjoint = (len(classes) * params.disjoint // 100) // T * T
    n_blurry = (len(classes) - n_disjoint) // T * T
    order = rng.permutation(classes)
    disjoint, blurry = order[:n_disjoint], order[n_disjoint : n_disjoint + n_blurry]
    dropped = order[n_disjoint + n_blurry :]

    if params.stochastic:
        d_cut, b_cut = _random_cuts(n_disjoint, T, rng), _random_cuts(n_blurry, T, rng)
    else:
        d_cut, b_cut = _even_cuts(n_disjoint, T), _even_cuts(n_blurry, T)
    disjoint_groups = [disjoint[d_cut[t] : d_cut[t + 1]] for t in range(T)]
    blurry_groups = [blurry[b_cut[t] : b_cut[t + 1]] for t in range(T)]

    disjoint_rows = [rows_of_classes(labels, g) for g in disjoint_groups]
    blurry_rows = [rng.permutation(rows_of_classes(labels, g)) for g in blurry_groups]
    n_blurry_samples = sum(len(r) for r in blurry_rows)

    if params.stochastic:
        quota_cut = _random_cuts(n_blurry_samples * params.blurry // 100, T, rng)
        quotas = np.diff(quota_cut)
    else:
        quotas = np.array([len(r) * params.blurry // 100 for r in blurry_rows], dtype=np.int64)
    given = [rows[: quotas[t]] for t, rows in enumerate(blurry_rows)]
    kept = [rows[quotas[t] :] for t, rows in enumerate(blurry_rows)]
    pool = rng.permutation(np.concatenate(given)) if given else np.empty(0, dtype=np.int64)
    if params.stochastic:
        deal = np.minimum(np.cumsum(quotas), len(pool))
        bounds = np.concatenate([[0], deal])
        received = [pool[bounds[t] : bounds[t + 1]] for t in range(T)]
    else:
        received = np.array_split(pool, T)

    task_rows = [np.concatenate([disjoint_rows[t], kept[t], received[t]]) for t in range(T)]
    schedule = concat_tasks(task_rows, labels, finest, rng)
    schedule.info = {
        "disjoint_classes": [sorted(int(c) for c in g) for g in disjoint_groups],
        "blurry_classes": [sorted(int(c) for c in g) for g in blurry_groups],
        "dropped_classes": sorted(int(c) for c in dropped),
        "blurry_samples": int(n_blurry_samples),
        "moved_samples": len(pool),
        "quotas": quotas.tolist(),
    }
    return schedule
