"""The ordered schedule (stream/schedules/ordered.py): dataset order, consecutive tasks."""

from __future__ import annotations

import numpy as np
import pytest

from stream.data.datasets import load_dataset
from stream.data.schedules import ScheduleError, make_schedule


def test_keeps_dataset_order_in_consecutive_tasks():
    ds = load_dataset("river:Phishing")
    schedule, params = make_schedule("ordered", ds, {"tasks": 3}, seed=1)
    assert params.tasks == 3
    assert np.array_equal(schedule.rows, np.arange(len(ds.y_train)))
    assert np.array_equal(schedule.y, ds.y_train)
    assert np.all(np.diff(schedule.task) >= 0)
    assert [int((schedule.task == t).sum()) for t in range(3)] == [333, 333, 334]


def test_one_task_by_default_and_seed_changes_nothing():
    ds = load_dataset("digits")
    a, params = make_schedule("ordered", ds, {}, seed=1)
    b, _ = make_schedule("ordered", ds, {}, seed=2)
    assert params.tasks == 1 and a.num_tasks == 1
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.task, b.task)


def test_more_tasks_than_samples_is_an_error():
    ds = load_dataset("river:Phishing?n=10")
    with pytest.raises(ScheduleError, match="11 tasks but only 8 samples"):
        make_schedule("ordered", ds, {"tasks": 11}, seed=0)
