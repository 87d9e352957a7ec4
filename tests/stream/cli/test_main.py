"""The command line as a user meets it: exit codes and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from stream.cli.main import main
from tests.support.cli_runner import ROOT, streamcl


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamcl: error: ")
    return lines[0]


def test_schedule_then_replay_writes_results_with_every_spec_key(tmp_path):
    made = streamcl(
        "schedule",
        "si-blurry",
        "--dataset",
        "digits",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "s.jsonl"),
    )
    assert made.returncode == 0, made.stderr
    assert "wrote 1442 events in 5 tasks" in made.stdout
    ran = streamcl(
        "replay", str(tmp_path / "s.jsonl"), "--learner", "nmc", "--out", str(tmp_path / "r")
    )
    assert ran.returncode == 0, ran.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    for key in (
        "A_auc",
        "A_avg",
        "A_last",
        "F_last",
        "prequential_accuracy",
        "samples",
        "seconds",
        "samples_per_second",
        "curve",
        "learner",
        "config",
        "schedule",
        "seed",
    ):
        assert key in results, key
    assert results["samples"] == 1442 and results["learner"] == "nmc"
    assert results["schedule"] == "si-blurry" and results["seed"] == 1
    assert all(0 <= v <= 1 for v in (results["A_auc"], results["A_avg"], results["A_last"]))
    assert (tmp_path / "r" / "curve.png").stat().st_size > 1000
    assert "| nmc" in ran.stdout


def test_replay_with_a_config_file(tmp_path):
    streamcl(
        "schedule",
        "disjoint",
        "--dataset",
        "digits",
        "--tasks",
        "2",
        "--out",
        str(tmp_path / "s.scl"),
    )
    (tmp_path / "er.toml").write_text("lr = 0.003\n[memory]\ncapacity = 50\n")
    ran = streamcl(
        "replay",
        str(tmp_path / "s.scl"),
        "--learner",
        "er",
        "--config",
        str(tmp_path / "er.toml"),
        "--eval-period",
        "500",
        "--out",
        str(tmp_path / "r"),
    )
    assert ran.returncode == 0, ran.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["config"]["memory"]["capacity"] == 50 and results["config"]["lr"] == 0.003
    # evaluated at the end of the micro-batch that reaches each mark (tasks end in short batches)
    marks = [s for s, _ in results["curve"]]
    assert len(marks) == 2 and 500 <= marks[0] < 516 and 1000 <= marks[1] < 1016


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli")
    assert main(["schedule", "disjoint", "--dataset", "digits", "--out", str(path / "S")]) == 0
    (path / "CFG").write_text(json.dumps({"backbone": {"hidden": "wide"}}))
    (path / "F").write_text("a file, where an output directory would have to be")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "S", "--learner", "nope"], "unknown learner 'nope'"),
        (
            ["schedule", "si-blurry", "--dataset", "mnist", "--out", "x.scl"],
            "unknown dataset 'mnist'",
        ),
        (
            ["schedule", "si-blurry", "--dataset", "digits", "--disjoint", "200", "--out", "x.scl"],
            "disjoint",
        ),
        (["schedule", "blurry", "--dataset", "digits", "--out", "x.scl"], "invalid choice"),
        (["replay"], "required"),
        (["frobnicate"], "invalid choice"),
        (["replay", "missing.scl", "--learner", "nmc"], "does not exist"),
        (["replay", "S", "--learner", "er", "--config", "CFG"], "backbone.hidden"),
        (["replay", "S", "--learner", "mvp"], "needs pretrained backbone.weights"),
        (["replay", "S", "--learner", "nmc", "--batch-size", "0"], "--batch-size"),
        (["replay", "S", "--learner", "nmc", "--device", "tpu"], "unknown device"),
        # outputs that cannot be written: checked before any work (they were tracebacks after it)
        (["replay", "S", "--learner", "nmc", "--out", "F/run"], "--out F/run: cannot write"),
        (["demo", "--out", "F/demo"], "--out F/demo: cannot write there"),
        (
            ["schedule", "disjoint", "--dataset", "digits", "--out", "F/s.scl"],
            "--out F/s.scl: cannot write there",
        ),
        (["schedule", "disjoint", "--dataset", "digits", "--out", "."], "is a directory"),
        (["replay", "a" * 300 + ".scl", "--learner", "nmc"], "path too long for the file system"),
        (["report", "a" * 300], "path too long for the file system"),
        (["predict", "S", "--checkpoint", "C", "--out", "F/p.jsonl"], "--out F/p.jsonl: cannot"),
        (["export", "--checkpoint", "C", "--out", "F/m.safetensors"], "--out F/m.safetensors"),
        (
            ["pretrain", "--dataset", "digits", "--backbone", "mlp", "--out", "F/w.safetensors"],
            "--out F/w.safetensors: cannot write there",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(workdir, monkeypatch, capsys, args, message):
    monkeypatch.chdir(workdir)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamcl: error: ") and message in err[0], err


def test_bad_usage_through_the_real_entry_point():
    result = streamcl("replay", "nowhere.scl", "--learner", "nmc")
    assert result.returncode == 2
    assert "does not exist" in one_error_line(result)


def test_invalid_json_config_names_file_and_line(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    (workdir / "c.json").write_text('{\n  "lr": 0.1,\n  oops\n}')
    assert main(["replay", "S", "--learner", "er", "--config", "c.json"]) == 2
    assert "c.json:3:" in capsys.readouterr().err


def test_learners_lists_every_learner_with_options(capsys):
    assert main(["learners"]) == 0
    out = capsys.readouterr().out
    assert "nmc" in out and "er" in out
    assert "memory.capacity" in out and "backbone.name" in out


def test_output_whose_reader_went_away_ends_quietly():
    """``streamcl learners | head -1``: exit 141 as a shell's SIGPIPE, no ``failed:`` line."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stream", "learners"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["replay"], "streamcl: error: replay: the following arguments are required: stream"),
        (["replay", "S", "--learner", "nmc", "--batch-size", "z"], "streamcl: error: replay: "),
        (["frobnicate"], "streamcl: error: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_an_argparse_error_says_streamcl_once(capsys, args, line):
    """argparse's own errors were wrapped again: ``streamcl: error: streamcl replay: ...``."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("streamcl") == 1, err


def test_bare_streamcl_prints_the_usage_and_every_command():
    result = streamcl()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: streamcl")
    assert "required: COMMAND" not in result.stderr
    for command in ("demo", "schedule", "replay", "report", "learners", "serve", "predict"):
        assert f"\n    {command} " in result.stderr, command
