import numpy as np
import pytest

from stream.data.schedules.disjoint import DisjointParams, build
from tests.stream.data.schedules.conftest import label_matrix


def test_each_class_in_exactly_one_task_and_every_sample_once(balanced_levels):
    s = build(balanced_levels, DisjointParams(tasks=5), seed=3)
    assert np.array_equal(np.sort(s.rows), np.arange(len(balanced_levels)))
    classes_per_task = [set(s.y[s.task == t].tolist()) for t in range(5)]
    assert all(len(c) == 2 for c in classes_per_task)
    assert set().union(*classes_per_task) == set(range(10))
    assert sum(len(c) for c in classes_per_task) == 10
    assert np.all(np.diff(s.task) >= 0)


def test_uneven_class_counts_give_groups_within_one():
    s = build(label_matrix([5] * 7), DisjointParams(tasks=3), seed=0)
    sizes = sorted(len(set(s.y[s.task == t].tolist())) for t in range(3))
    assert sizes == [2, 2, 3]


def test_more_tasks_than_classes_is_an_error():
    with pytest.raises(ValueError, match="tasks"):
        build(label_matrix([3, 3]), DisjointParams(tasks=3), seed=0)
