"""Hierarchical data that is not what it seems: each refused with one error naming the data,
before a schedule is written or a daemon serves (each case below crashed with exit 1, wrapped,
or was read wrongly before)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learners.base import MAX_LEVELS, Problem
from stream.cli import main as cli
from stream.daemon.config import ServeConfig, ServeConfigError
from stream.daemon.serve import build_problem
from stream.data.datasets import DatasetError, load_dataset
from stream.data.schedules import ScheduleError, make_schedule
from stream.data.stream_file import StreamFileError, read_stream
from stream.sources.file_source import check_against_dataset
from stream.sources.wire import Decoder, encode_binary

FINE_PARENT = np.array([0, 0, 1, 1, 2, 2])


def write_npz(path, level_names=None, drop_fine=None, parents=FINE_PARENT, **extra):
    """Six fine classes under three coarse ones, 20 training and 5 test samples each."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per in (("train", 20), ("test", 5)):
        y = np.repeat(np.arange(len(parents)), per)
        if drop_fine is not None:
            y = y[y != drop_fine]
        arrays[f"X_{split}"] = rng.normal(size=(len(y), 4)).astype(np.float32)
        arrays[f"y_{split}"] = y
        arrays[f"y_{split}_levels"] = np.stack([parents[y], y], axis=1)
    if level_names is not None:
        arrays["level_names"] = np.array(level_names)
    np.savez(path, **{**arrays, **extra})
    return f"npz:{path}"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # replay and serve: "failed: ValueError: Problem.level_names must differ" (exit 1)
        (
            lambda p: write_npz(p, level_names=["a", "a"]),
            r"level names must differ, got \['a', 'a'\]",
        ),
        # replay and serve: "Problem.parents[0] names class -1" (exit 1)
        (lambda p: write_npz(p, drop_fine=1), "class 1 of level 1 has no samples"),
        # "TypeError: iteration over a 0-d array" (exit 1)
        (
            lambda p: write_npz(p, level_names=np.array("coarse")),
            "level_names must be a list of names",
        ),
    ],
    ids=["duplicate level names", "a fine class without samples", "0-d level names"],
)
def test_a_hierarchy_that_cannot_be_a_problem_is_refused_where_it_loads(
    tmp_path, capsys, make, message
):
    spec = make(tmp_path / "h.npz")
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)
    out = str(tmp_path / "h.scl")
    assert cli.main(["schedule", "hle", "--dataset", spec, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "h.npz") in err, err


def test_a_problem_of_more_levels_than_served_models_hold_is_refused():
    """Datasets and streams took 256 levels, checkpoints and exports 64: a model trained on 65
    levels could not be predicted with or exported."""
    with pytest.raises(ValueError, match=f"65 levels, at most {MAX_LEVELS}"):
        Problem(input_shape=(1,), num_classes=(2,) * 65, level_names=tuple(map(str, range(65))))
    branching = "x".join(["2"] + ["1"] * MAX_LEVELS)
    with pytest.raises(DatasetError, match="branching: List should have at most 64 items"):
        load_dataset(f"synthetic-hierarchy:branching={branching},train=2,test=1,dim=1")


def test_more_tasks_than_a_stream_holds_are_refused_before_the_schedule_is_made():
    """It generated the schedule for 11 s, then failed writing the header (exit 1, a dump)."""
    dataset = load_dataset("synthetic-hierarchy:branching=3x2,train=2,test=1,dim=1")
    for name in ("hle", "si-blurry", "ordered"):
        with pytest.raises(
            ScheduleError, match="tasks: Input should be less than or equal to 100000"
        ):
            make_schedule(name, dataset, {"tasks": 100_001}, seed=1)


@pytest.fixture()
def hle_jsonl(tmp_path):
    path = tmp_path / "hle.jsonl"
    spec = write_npz(tmp_path / "h.npz")
    assert cli.main(["schedule", "hle", "--dataset", spec, "--out", str(path)]) == 0
    return path


def test_a_label_beyond_its_own_levels_classes_is_refused_when_the_stream_is_read(
    hle_jsonl, capsys
):
    """Bounded only by the largest level: publish sent it, replay refused it without FILE:LINE."""
    lines = hle_jsonl.read_text().splitlines()
    at = next(i for i, line in enumerate(lines[1:], 1) if json.loads(line)["level"] == 0)
    event = json.loads(lines[at])
    event["y"] = 5  # a fine class id, at the coarse level of 3 classes
    lines[at] = json.dumps(event)
    hle_jsonl.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        StreamFileError,
        match=rf"{hle_jsonl}:{at + 1}: event {at - 1}: y 5 outside \[0, 2\] at level 0",
    ):
        read_stream(hle_jsonl)
    capsys.readouterr()
    assert cli.main(["publish", str(hle_jsonl), "--bootstrap", "127.0.0.1:9", "--topic", "t"]) == 2
    assert f"{hle_jsonl}:{at + 1}" in capsys.readouterr().err


def test_a_regenerated_tree_with_the_same_counts_is_other_data(tmp_path, hle_jsonl):
    stream = read_stream(hle_jsonl)
    swapped = write_npz(tmp_path / "h.npz", parents=np.array([0, 1, 0, 1, 2, 2]))
    with pytest.raises(StreamFileError, match="parents_sha256"):
        check_against_dataset(stream, load_dataset(swapped), "hle.jsonl")
    renamed = write_npz(tmp_path / "h.npz", level_names=["fine", "coarse"])
    with pytest.raises(StreamFileError, match="level_names"):
        check_against_dataset(stream, load_dataset(renamed), "hle.jsonl")


def test_the_daemon_compares_declared_level_names_and_parents_with_its_evaluation_data(tmp_path):
    spec = write_npz(tmp_path / "h.npz")
    base = {
        "kafka": {"bootstrap": "h:1", "topic": "t"},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "c")},
        "evaluation": {"dataset": spec},
        "dead_letter": {"topic": "dead"},
    }
    problem = {"input_shape": [4], "num_classes": [3, 6]}
    agreeing = {**problem, "level_names": ["level0", "level1"], "parents": [FINE_PARENT.tolist()]}
    assert build_problem(ServeConfig.model_validate({**base, "problem": agreeing}))[0].parents
    for key, value, message in (
        (
            "level_names",
            ["level1", "level0"],
            r"problem.level_names \['level1', 'level0'\] differs",
        ),
        ("parents", [[0, 1, 0, 1, 2, 2]], "problem.parents differs from evaluation dataset"),
    ):
        config = ServeConfig.model_validate({**base, "problem": {**agreeing, key: value}})
        with pytest.raises(ServeConfigError, match=message):
            build_problem(config)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("level", [256], r"level must be in \[0, 255\]"),
        ("level", [-1], r"level must be in \[0, 255\]"),
        ("y", [2**31], r"y must be in \[-2147483648, 2147483647\]"),
        ("task", [2**40], r"task must be in"),
        ("level", [0, 0], "level must be 1 integers, one per sample"),
        ("y", [0.5], "y must be 1 integers"),
    ],
)
def test_the_binary_encoder_refuses_what_its_columns_cannot_hold(column, values, message):
    """A level of 256 was sent as 0 and -1 as 255; a y past int32 wrapped."""
    columns = {"y": [1], column: values}
    with pytest.raises(ValueError, match=message):
        encode_binary(np.zeros((1, 2), np.float32), **columns)


def test_the_binary_encoder_keeps_values_in_range():
    x = np.zeros((2, 2), np.float32)
    problem = Problem(input_shape=(2,), num_classes=(2, 3), level_names=("a", "b"))
    message = encode_binary(x, [2, 1], level=[1, 0], task=[3, 4], ids=[5, 2**62])
    decoded = Decoder(problem).decode(message)
    assert decoded.y.tolist() == [2, 1] and decoded.level.tolist() == [1, 0]
    assert decoded.task.tolist() == [3, 4] and decoded.ids.tolist() == [5, 2**62]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("branching=2x3,branching=4x4", "option branching given twice"),
        ("seed=1.0", "seed: Value error, expected a whole number, got '1.0'"),
        ("train=1e3", "train: Value error, expected a whole number"),
    ],
)
def test_synthetic_hierarchy_options_are_read_strictly(options, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"synthetic-hierarchy:{options}")
