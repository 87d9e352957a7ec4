"""Property tests of the HLE schedules on CIFAR-100-format files and the synthetic hierarchy."""

import json
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.data.datasets import load_dataset
from stream.data.schedules import ScheduleError, make_schedule
from tests.support.paths import REPO

ROOT = REPO
PER_FINE_TRAIN = 13  # not a multiple of T, so floor(n_c / T) is exercised


def write_cifar100(directory: Path) -> None:
    """CIFAR-100 "python version" pickles: 20 coarse classes of 5 fine classes, shuffled rows."""
    rng = np.random.default_rng(0)
    fine_to_coarse = rng.permutation(np.arange(100) // 5)
    for name, per_class in (("train", PER_FINE_TRAIN), ("test", 2)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        content = {
            b"fine_labels": fine.tolist(),
            b"coarse_labels": fine_to_coarse[fine].tolist(),
            b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
        }
        (directory / name).write_bytes(pickle.dumps(content, protocol=2))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)]}
    (directory / "meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("cifar100")
    write_cifar100(directory)
    return directory


@pytest.fixture(scope="module", params=["cifar100", "synthetic", "synthetic-deep"])
def dataset(request, cifar_dir):
    spec = {
        "cifar100": f"cifar100:{cifar_dir}",
        "synthetic": "synthetic-hierarchy:branching=6x3,train=11,test=2,dim=4",
        "synthetic-deep": "synthetic-hierarchy:branching=3x2x2x2,train=9,test=2,dim=4",
    }[request.param]
    return load_dataset(spec)


def rows_by_task(schedule):
    return [schedule.rows[schedule.task == t] for t in range(schedule.num_tasks)]


def assert_labels_match_levels(schedule, levels):
    assert np.array_equal(schedule.y, levels[schedule.rows, schedule.level])
    # Tasks are contiguous and in order.
    assert np.all(np.diff(schedule.task) >= 0)


def assert_fine_tasks_expand_coarse_groups(schedule, levels):
    """Each task after the first holds only finest labels, of children of its own coarse group;
    the groups partition the coarse classes."""
    coarse, finest = levels[:, 0], levels.shape[1] - 1
    groups = schedule.info["task_coarse_classes"][1:]
    assert sorted(c for g in groups for c in g) == sorted(np.unique(coarse).tolist())
    for t, rows in enumerate(rows_by_task(schedule)[1:], start=1):
        assert set(schedule.level[schedule.task == t].tolist()) == {finest}
        assert set(coarse[rows].tolist()) <= set(groups[t - 1])
        assert len(rows) > 0


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), tasks=st.sampled_from([None, 2, 3, 4]))
def test_single_every_sample_once_coarse_share_first(dataset, seed, tasks):
    levels = dataset.y_train_levels
    schedule, _ = make_schedule("hle", dataset, {"tasks": tasks}, seed)
    n_tasks = schedule.num_tasks
    assert n_tasks == (tasks or 1 + min(5, len(np.unique(levels[:, 0]))))
    assert np.array_equal(np.sort(schedule.rows), np.arange(len(levels)))
    assert_labels_match_levels(schedule, levels)
    first = schedule.task == 0
    assert set(schedule.level[first].tolist()) == {0}
    # Task 0 holds floor(n_c / T) samples of every finest class, labelled coarse.
    fine = levels[:, -1]
    taken = Counter(fine[schedule.rows[first]].tolist())
    for c, n_c in Counter(fine.tolist()).items():
        assert taken[c] == n_c // n_tasks
    assert_fine_tasks_expand_coarse_groups(schedule, levels)
    # Without blurry mixing each finest class lives in exactly one fine task.
    fine_task = {}
    for i in np.flatnonzero(~first):
        assert fine_task.setdefault(int(schedule.y[i]), int(schedule.task[i])) == schedule.task[i]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_dual_every_sample_twice_coarse_first(dataset, seed):
    levels = dataset.y_train_levels
    schedule, _ = make_schedule("hle", dataset, {"scenario": "dual"}, seed)
    assert Counter(Counter(schedule.rows.tolist()).values()) == {2: len(levels)}
    assert_labels_match_levels(schedule, levels)
    first = schedule.task == 0
    assert np.array_equal(np.sort(schedule.rows[first]), np.arange(len(levels)))
    assert set(schedule.level[first].tolist()) == {0}
    assert np.array_equal(np.sort(schedule.rows[~first]), np.arange(len(levels)))
    assert_fine_tasks_expand_coarse_groups(schedule, levels)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_multi_depth_one_task_per_level_coarse_to_fine(dataset, seed):
    levels = dataset.y_train_levels
    depth = levels.shape[1]
    schedule, _ = make_schedule("hle", dataset, {"scenario": "multi-depth"}, seed)
    assert schedule.num_tasks == depth and schedule.info["task_levels"] == list(range(depth))
    assert np.array_equal(np.sort(schedule.rows), np.arange(len(levels)))
    assert_labels_match_levels(schedule, levels)
    assert np.array_equal(schedule.level, schedule.task)
    fine = levels[:, -1]
    for c, n_c in Counter(fine.tolist()).items():
        per_task = [int(np.sum(fine[rows] == c)) for rows in rows_by_task(schedule)]
        assert per_task == [len(p) for p in np.array_split(np.arange(n_c), depth)]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), blurry=st.integers(1, 60))
def test_blurry_mixes_only_among_fine_tasks(dataset, seed, blurry):
    levels = dataset.y_train_levels
    clean, _ = make_schedule("hle", dataset, {"tasks": 4}, seed)
    mixed, _ = make_schedule("hle", dataset, {"tasks": 4, "blurry": blurry}, seed)
    assert np.array_equal(np.sort(mixed.rows), np.arange(len(levels)))
    assert_labels_match_levels(mixed, levels)
    assert set(mixed.level[mixed.task == 0].tolist()) == {0}
    assert set(mixed.level[mixed.task > 0].tolist()) == {levels.shape[1] - 1}
    sizes = [len(r) for r in rows_by_task(clean)[1:]]
    assert mixed.info["moved_samples"] == sum(n * blurry // 100 for n in sizes)
    if mixed.info["moved_samples"] >= len(sizes):
        # Some fine task now holds samples of another group's coarse classes.
        groups = mixed.info["task_coarse_classes"]
        coarse = levels[:, 0]
        outside = [
            not set(coarse[rows].tolist()) <= set(groups[t])
            for t, rows in enumerate(rows_by_task(mixed))
            if t > 0
        ]
        assert any(outside)


@pytest.mark.parametrize("scenario", ["single", "dual", "multi-depth"])
def test_same_seed_same_stream_other_seed_other_stream(dataset, scenario):
    a, _ = make_schedule("hle", dataset, {"scenario": scenario}, 3)
    b, _ = make_schedule("hle", dataset, {"scenario": scenario}, 3)
    c, _ = make_schedule("hle", dataset, {"scenario": scenario}, 4)
    for name in ("rows", "y", "level", "task"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.rows, c.rows)


def test_coarse_share_overrides_one_over_T(cifar_dir):
    ds = load_dataset(f"cifar100:{cifar_dir}")
    schedule, _ = make_schedule("hle", ds, {"coarse_share": 0.5}, 1)
    assert int(np.sum(schedule.task == 0)) == 100 * (PER_FINE_TRAIN // 2)


@pytest.mark.parametrize(
    ("spec", "params", "message"),
    [
        ("digits", {}, "needs a dataset with hierarchy levels"),
        ("synthetic-hierarchy:branching=2x3,train=3", {"tasks": 4}, "2 coarse classes"),
        (
            "synthetic-hierarchy:branching=2x3,train=3",
            {"scenario": "multi-depth", "tasks": 3},
            "must be 2",
        ),
        (
            "synthetic-hierarchy:branching=2x3,train=3",
            {"scenario": "multi-depth", "blurry": 10},
            "blurry=0",
        ),
        ("synthetic-hierarchy:branching=2x3,train=3", {"tasks": 2, "blurry": 10}, "two tasks"),
        ("synthetic-hierarchy:branching=2x3,train=3", {"scenario": "triple"}, "scenario"),
        ("synthetic-hierarchy:branching=2x3,train=3", {"disjoint": 50}, "disjoint"),
    ],
)
def test_bad_parameters_say_what(spec, params, message):
    with pytest.raises(ScheduleError, match=message):
        make_schedule("hle", load_dataset(spec), params, 1)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_an_hle_stream_with_levels(cifar_dir, tmp_path):
    out = tmp_path / "dual.jsonl"
    done = run_cli(
        "schedule",
        "hle",
        "--dataset",
        f"cifar100:{cifar_dir}",
        "--scenario",
        "dual",
        "--tasks",
        "3",
        "--seed",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])["streamcl_stream"]
    assert header["schedule"] == "hle" and header["params"]["scenario"] == "dual"
    assert header["level_names"] == ["coarse", "fine"] and header["num_tasks"] == 3
    events = [json.loads(line) for line in lines[1:]]
    assert len(events) == 2 * 100 * PER_FINE_TRAIN
    assert {e["level"] for e in events if e["task"] == 0} == {0}
    assert {e["level"] for e in events if e["task"] > 0} == {1}


def test_cli_bad_scenario_is_one_line_exit_2(tmp_path):
    done = run_cli(
        "schedule",
        "hle",
        "--dataset",
        "synthetic-hierarchy",
        "--scenario",
        "triple",
        "--out",
        str(tmp_path / "x.scl"),
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "scenario" in done.stderr
