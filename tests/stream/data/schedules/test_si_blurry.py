import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.schedules.si_blurry import SiBlurryParams, build, tasks_keeping_every_class
from tests.stream.data.schedules.conftest import label_matrix


def scheduled_classes(info):
    return sorted(
        c for groups in ("disjoint_classes", "blurry_classes") for g in info[groups] for c in g
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    tasks=st.integers(1, 6),
    n=st.sampled_from([0, 10, 50, 90, 100]),
    m=st.sampled_from([0, 10, 50, 100]),
    stochastic=st.booleans(),
    counts=st.lists(st.integers(3, 30), min_size=6, max_size=20),
)
def test_si_blurry_properties(seed, tasks, n, m, stochastic, counts):
    levels = label_matrix(counts)
    C = len(counts)
    s = build(
        levels, SiBlurryParams(tasks=tasks, disjoint=n, blurry=m, stochastic=stochastic), seed
    )
    info = s.info
    D = (C * n // 100) // tasks * tasks
    B = (C - D) // tasks * tasks
    assert sum(len(g) for g in info["disjoint_classes"]) == D
    assert sum(len(g) for g in info["blurry_classes"]) == B
    assert len(info["dropped_classes"]) == C - D - B
    # every sample of a scheduled class exactly once; dropped classes (the official rounding
    # of D and B down to multiples of T) never
    kept = np.flatnonzero(np.isin(levels[:, 0], scheduled_classes(info)))
    assert np.array_equal(np.sort(s.rows), kept)
    assert not np.isin(s.y, info["dropped_classes"]).any()
    # disjoint classes appear in exactly one task, their own
    for t, group in enumerate(info["disjoint_classes"]):
        for c in group:
            assert set(s.task[s.y == c].tolist()) == {t}
    # the blurry share matches M: the quotas add up to floor(#blurry samples * M / 100)
    n_blurry = int(np.isin(levels[:, 0], [c for g in info["blurry_classes"] for c in g]).sum())
    assert info["blurry_samples"] == n_blurry
    if stochastic:
        assert sum(info["quotas"]) == n_blurry * m // 100
    assert info["moved_samples"] <= n_blurry * m // 100 + tasks
    # only blurry samples ever leave their class's task
    owner = {
        c: t for t, g in enumerate(info["blurry_classes"] + info["disjoint_classes"]) for c in g
    }
    owner = {c: t % tasks for c, t in owner.items()}
    away = np.array(
        [owner[c] != t for c, t in zip(s.y.tolist(), s.task.tolist(), strict=True)], bool
    )
    assert int(away.sum()) <= info["moved_samples"]
    assert not np.isin(s.y[away], [c for g in info["disjoint_classes"] for c in g]).any()


def test_stochastic_tasks_have_uneven_sizes_and_class_sets():
    levels = label_matrix([40] * 20)
    sizes = set()
    for seed in range(5):
        s = build(levels, SiBlurryParams(tasks=5, disjoint=50, blurry=10), seed)
        sizes.add(tuple(np.bincount(s.task, minlength=5)))
        class_counts = [len(g) for g in s.info["disjoint_classes"]]
        if len(set(class_counts)) > 1:
            break
    assert len(set(class_counts)) > 1
    assert any(len(set(sz)) > 1 for sz in sizes)


def test_non_stochastic_variant_has_equal_class_groups_and_keeps_every_sample():
    levels = label_matrix([40] * 20)
    s = build(levels, SiBlurryParams(tasks=5, disjoint=50, blurry=10, stochastic=False), seed=4)
    assert [len(g) for g in s.info["disjoint_classes"]] == [2] * 5
    assert [len(g) for g in s.info["blurry_classes"]] == [2] * 5
    assert s.info["quotas"] == [8] * 5 and s.info["moved_samples"] == 40
    assert len(s) == 800


def test_same_seed_same_stream_different_seeds_differ():
    ds = load_dataset("digits")
    a, _ = make_schedule("si-blurry", ds, {}, seed=1)
    b, _ = make_schedule("si-blurry", ds, {}, seed=1)
    c, _ = make_schedule("si-blurry", ds, {}, seed=2)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.task, b.task) and a.info == b.info
    assert not np.array_equal(a.rows, c.rows)


def test_stream_is_pinned_across_machines():
    """PCG64 streams are platform independent: these numbers must never change."""
    s, _ = make_schedule("si-blurry", load_dataset("digits"), {}, seed=1)
    assert s.info["disjoint_classes"] == [[8], [], [4], [0, 7], [1]]
    assert s.info["quotas"] == [9, 7, 15, 7, 34]
    assert np.bincount(s.task).tolist() == [149, 7, 433, 431, 422]


@settings(max_examples=30, deadline=None)
@given(tasks=st.integers(1, 12), counts=st.lists(st.integers(3, 10), min_size=1, max_size=24))
def test_the_suggested_task_count_drops_no_class(tasks, counts):
    levels = label_matrix(counts)
    suggested = tasks_keeping_every_class(len(counts), tasks)
    dropped = build(levels, SiBlurryParams(tasks=tasks), 0).info["dropped_classes"]
    assert len(dropped) == len(counts) % tasks
    assert build(levels, SiBlurryParams(tasks=suggested), 0).info["dropped_classes"] == []
