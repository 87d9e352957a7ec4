"""Stream schedules: ``disjoint``, ``i-blurry``, ``si-blurry``, ``hle`` — deterministic
in the seed — and ``ordered`` (dataset order, for streams whose order matters: river's drifting
ones).

>>> from stream.data.datasets import load_dataset
>>> s, params = make_schedule("si-blurry", load_dataset("digits"), {}, seed=1)
>>> len(s), s.num_tasks, params.disjoint, params.blurry
(1442, 5, 50, 10)
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from pydantic import ValidationError

from stream.data.datasets import Dataset
from stream.data.schedules.schedule import Schedule, ScheduleParams
from stream.data.schedules.si_blurry import tasks_keeping_every_class

__all__ = [
    "Schedule",
    "ScheduleError",
    "ScheduleParams",
    "make_schedule",
    "params_model",
    "schedule_names",
]

# name -> (module with build(levels, params, seed), params class name); one line per schedule.
_SCHEDULES: dict[str, tuple[str, str]] = {
    "disjoint": ("stream.data.schedules.disjoint", "DisjointParams"),
    "i-blurry": ("stream.data.schedules.i_blurry", "IBlurryParams"),
    "si-blurry": ("stream.data.schedules.si_blurry", "SiBlurryParams"),
    "hle": ("stream.data.schedules.hle", "HLEParams"),
    "ordered": ("stream.data.schedules.ordered", "OrderedParams"),
}


class ScheduleError(ValueError):
    """Unknown schedule or parameters that do not fit it or the dataset."""


def schedule_names() -> list[str]:
    return list(_SCHEDULES)


def params_model(name: str) -> type[ScheduleParams]:
    if name not in _SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}; known: {', '.join(_SCHEDULES)}")
    module, cls = _SCHEDULES[name]
    model: type[ScheduleParams] = getattr(importlib.import_module(module), cls)
    return model


def make_schedule(
    name: str, dataset: Dataset, params: dict[str, Any], seed: int
) -> tuple[Schedule, ScheduleParams]:
    """Build schedule ``name`` over ``dataset``'s training split."""
    model = params_model(name)
    if seed < 0:
        raise ScheduleError(f"the seed must be a non-negative integer, got {seed}")
    try:
        validated = model.model_validate(params)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ScheduleError(f"invalid {name} parameters: {fields}") from None
    build = importlib.import_module(_SCHEDULES[name][0]).build
    assert dataset.y_train_levels is not None
    samples = len(dataset.y_train_levels)
    tasks = getattr(validated, "tasks", None)
    if isinstance(tasks, int) and tasks > samples:
        raise ScheduleError(
            f"invalid {name} parameters: tasks: {tasks} tasks but only {samples} samples"
        )
    try:
        schedule: Schedule = build(dataset.y_train_levels, validated, seed)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None
    if len(schedule.rows) == 0:
        why = ""
        if tasks:
            classes = len(np.unique(dataset.y_train_levels[:, -1]))
            why = (
                f": it keeps classes in multiples of the task count, {tasks}, and there are "
                f"{classes}; --tasks {tasks_keeping_every_class(classes, tasks)}, a divisor of "
                f"{classes}, keeps every class"
            )
        raise ScheduleError(
            f"{name} with these parameters shows no sample of {dataset.spec} "
            f"(every class was dropped{why})"
        )
    return schedule, validated
