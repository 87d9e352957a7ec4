import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.data.schedules.i_blurry import IBlurryParams, build
from tests.stream.data.schedules.conftest import label_matrix


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    tasks=st.integers(2, 5),
    n=st.sampled_from([0, 20, 50, 100]),
    m=st.sampled_from([0, 10, 30, 100]),
    counts=st.lists(st.integers(5, 40), min_size=5, max_size=12),
)
def test_i_blurry_properties(seed, tasks, n, m, counts):
    levels = label_matrix(counts)
    s = build(levels, IBlurryParams(tasks=tasks, disjoint=n, blurry=m), seed)
    # every training sample exactly once
    assert np.array_equal(np.sort(s.rows), np.arange(len(levels)))
    assert np.array_equal(s.y, levels[s.rows, 0])
    # disjoint classes appear in exactly one task: their own
    for t, group in enumerate(s.info["disjoint_classes"]):
        for c in group:
            assert set(s.task[s.y == c].tolist()) == {t}
    # the blurry share: M% of each task's blurry samples moved, all of them to other tasks
    expected_moved = sum(
        int(np.isin(levels[:, 0], g).sum()) * m // 100 for g in s.info["blurry_classes"]
    )
    assert s.info["moved_samples"] == expected_moved
    moved = 0
    for t, group in enumerate(s.info["blurry_classes"]):
        members = np.isin(s.y, group)
        moved += int((members & (s.task != t)).sum())
    assert moved == expected_moved


def test_same_seed_same_stream_different_seed_differs(balanced_levels):
    params = IBlurryParams(tasks=5, disjoint=50, blurry=10)
    a, b, c = (build(balanced_levels, params, seed) for seed in (1, 1, 2))
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.task, b.task)
    assert not np.array_equal(a.rows, c.rows)
