"""``streamcl schedule`` on datasets from outside: a bad one is exit 2 with one line saying
what and where, before anything big is allocated or generated."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from stream.cli import main as cli
from stream.data.stream_file import read_stream
from tests.support.cli_runner import streamcl
from tests.support.logging_state import restore_logging  # noqa: F401 - autouse fixture


def npz(path, **arrays):
    X = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    y = np.arange(20) % 2
    base = {"X_train": X, "y_train": y, "X_test": X[:5], "y_test": y[:5], **arrays}
    np.savez(path, **base)
    return f"npz:{path}"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y_train": np.r_[np.arange(19) % 2, 10**10]}, "y_train holds the label 10000000000"),
        ({"y_test": np.array([0, 1, 0, 1, 2**63], "u8")}, "holds the label 9223372036854775808"),
        ({"X_train": np.zeros((20, 0), "f4"), "X_test": np.zeros((5, 0), "f4")}, "(20, 0)"),
    ],
    ids=["label 10^10", "uint64 label 2^63", "zero-width inputs"],
)
def test_a_bad_npz_is_exit_2_with_one_line(tmp_path, capsys, arrays, message):
    spec = npz(tmp_path / "d.npz", **arrays)
    out = tmp_path / "s.scl"
    assert (
        cli.main(["schedule", "si-blurry", "--dataset", spec, "--tasks", "2", "--out", str(out)])
        == 2
    )
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"streamcl: error: {spec}: ") and message in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic-hierarchy:seed=-1", "seed: Input should be greater than or equal to 0"),
        ("river:Agrawal?n=1000000000", r"n must be an integer in [1, 1000000]"),
    ],
)
def test_a_generated_dataset_beyond_its_bounds_is_exit_2_in_a_real_process(tmp_path, spec, message):
    """The first was exit 1, "failed: ValueError"; the second generated for ever."""
    done = streamcl(
        "schedule", "ordered", "--dataset", spec, "--out", str(tmp_path / "s.scl"), timeout=60
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("streamcl: error: ") and message in line, line


def test_a_negative_seed_is_named(tmp_path, capsys):
    out = str(tmp_path / "s.scl")
    assert (
        cli.main(["schedule", "si-blurry", "--dataset", "digits", "--seed", "-1", "--out", out])
        == 2
    )
    assert "the seed must be a non-negative integer, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # read as a percent of 1 and recorded as "blurry": 1
        (["si-blurry", "--param", "blurry=true"], "invalid si-blurry parameters: blurry: "),
        (["i-blurry", "--param", "tasks=false"], "invalid i-blurry parameters: tasks: "),
        # recorded in the header, changing nothing in the stream
        (
            ["hle", "--scenario", "dual", "--param", "coarse_share=0.3"],
            "invalid hle parameters: coarse_share applies to the single scenario only",
        ),
        (
            ["hle", "--scenario", "multi-depth", "--param", "coarse_share=0.5"],
            "invalid hle parameters: coarse_share applies to the single scenario only",
        ),
    ],
)
def test_a_parameter_that_would_mean_nothing_is_named(tmp_path, capsys, args, message):
    dataset = "synthetic-hierarchy" if args[0] == "hle" else "digits"
    out = tmp_path / "s.jsonl"
    assert cli.main(["schedule", *args, "--dataset", dataset, "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"streamcl: error: {message}"), line
    assert not out.exists()


def test_a_stream_can_be_written_into_a_fifo(tmp_path):
    """schedule writes in place, so a pipe (or /dev/stdout) is a fine --out; the check that
    keeps predict and export from renaming over a device must not refuse it."""
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def drain() -> None:
        with fifo.open("rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert cli.main(["schedule", "disjoint", "--dataset", "digits", "--out", str(fifo)]) == 0
    finally:
        reader.join(timeout=30)
    lines = received[0].decode().splitlines()
    assert len(lines) > 1000 and lines[-1].startswith("{")


def classes_npz(path, classes: int) -> str:
    y = np.arange(100 * classes) % classes
    X = np.random.default_rng(0).random((len(y), 4), dtype=np.float32)
    np.savez(path, X_train=X, y_train=y, X_test=X[:5], y_test=y[:5])
    return f"npz:{path}"


def test_si_blurry_says_which_classes_it_dropped_and_which_tasks_keep_them(tmp_path, capsys):
    """7 classes in 5 tasks: 2 classes, 200 of 700 samples, were dropped and only the stream's
    header said so; the terminal read "wrote 500 events"."""
    spec = classes_npz(tmp_path / "c7.npz", 7)
    out = tmp_path / "s.scl"
    assert cli.main(["schedule", "si-blurry", "--dataset", spec, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    [warning] = [json.loads(line) for line in captured.err.splitlines()]
    dropped = read_stream(out).header.info["dropped_classes"]
    assert len(dropped) == 2 and warning["classes"] == dropped
    assert (warning["event"], warning["level"]) == ("classes_dropped", "warning")
    assert (warning["samples"], warning["of"]) == (200, 700)
    assert "multiples of the task count, 5" in warning["why"]
    assert warning["fix"].startswith("--tasks 7,")
    assert "wrote 500 events" in captured.out
    assert (
        cli.main(["schedule", "si-blurry", "--dataset", spec, "--tasks", "7", "--out", str(out)])
        == 0
    )
    assert capsys.readouterr().err == ""


def test_si_blurry_dropping_every_class_suggests_a_task_count(tmp_path, capsys):
    spec = classes_npz(tmp_path / "c3.npz", 3)
    out = tmp_path / "s.scl"
    assert cli.main(["schedule", "si-blurry", "--dataset", spec, "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "every class was dropped" in line and "--tasks 3" in line, line
    assert not out.exists()
