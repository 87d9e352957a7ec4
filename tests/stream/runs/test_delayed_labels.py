"""Replay with delayed labels (stream/runs/delayed_labels.py) and ``schedule --label-delay``."""

from __future__ import annotations

import json

import pytest

from stream.cli import main as cli
from stream.data.stream_file import read_stream


@pytest.fixture(scope="module")
def stream_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("delayed") / "digits.scl"
    assert cli.main(["schedule", "si-blurry", "--dataset", "digits", "--out", str(path)]) == 0
    return path


def _replay(stream_path, out, *options) -> dict:
    args = ["replay", str(stream_path), "--learner", "nmc", "--eval-period", "500"]
    assert cli.main([*args, "--out", str(out), *options]) == 0
    return json.loads((out / "results.json").read_text())


def test_labels_with_no_delay_score_as_test_then_train_one_sample_at_a_time(stream_path, tmp_path):
    served = _replay(stream_path, tmp_path / "served", "--label-delay", "0")
    plain = _replay(stream_path, tmp_path / "plain", "--batch-size", "1")
    for key in ("prequential_accuracy", "A_auc", "A_last", "F_last", "samples", "curve"):
        assert served[key] == plain[key], key
    assert served["predictions"] == served["samples"] and served["expired"] == 0


def test_a_longer_delay_lowers_prequential_accuracy_but_learns_every_sample(stream_path, tmp_path):
    quick = _replay(stream_path, tmp_path / "quick", "--label-delay", "10")
    late = _replay(stream_path, tmp_path / "late", "--label-delay", "300")
    assert late["samples"] == quick["samples"] == len(read_stream(stream_path))
    assert late["prequential_accuracy"] < quick["prequential_accuracy"]
    # The same samples learned in the same order: the final model is the same.
    assert late["A_last"] == quick["A_last"]


def test_a_stream_scheduled_with_a_delay_replays_with_it(tmp_path):
    path = tmp_path / "late.scl"
    schedule = ["schedule", "si-blurry", "--dataset", "digits", "--label-delay", "300"]
    assert cli.main([*schedule, "--out", str(path)]) == 0
    assert read_stream(path).header.label_delay == 300
    own = _replay(path, tmp_path / "own")
    explicit = _replay(path, tmp_path / "explicit", "--label-delay", "300")
    assert own["label_delay"] == 300
    assert own["prequential_accuracy"] == explicit["prequential_accuracy"]


def test_a_negative_delay_is_bad_usage(stream_path, tmp_path, capsys):
    args = ["replay", str(stream_path), "--learner", "nmc", "--label-delay", "-1"]
    assert cli.main([*args, "--out", str(tmp_path)]) == 2
    assert (
        "label delay '-1': expected N, uniform:A-B or exponential:MEAN" in capsys.readouterr().err
    )
    schedule = ["schedule", "disjoint", "--dataset", "digits", "--label-delay", "uniform:9-3"]
    assert cli.main([*schedule, "--out", str(tmp_path / "s.scl")]) == 2


def test_drawn_delays_replay_the_same_twice_and_sit_between_their_bounds(stream_path, tmp_path):
    drawn = [
        _replay(stream_path, tmp_path / f"drawn{i}", "--label-delay", "uniform:10-300")
        for i in range(2)
    ]
    assert drawn[0]["prequential_accuracy"] == drawn[1]["prequential_accuracy"]
    quick = _replay(stream_path, tmp_path / "quick", "--label-delay", "10")
    late = _replay(stream_path, tmp_path / "late", "--label-delay", "300")
    assert late["prequential_accuracy"] < drawn[0]["prequential_accuracy"]
    assert drawn[0]["prequential_accuracy"] < quick["prequential_accuracy"]
    assert drawn[0]["label_delay"] == "uniform:10-300"


@pytest.mark.parametrize(
    "delay",
    [
        "99999999999999999999",  # beyond int64: was failed: OverflowError
        "9223372036854775000",  # positions plus delays wrapped: labels silently never learned
        "exponential:1" + "0" * 300,  # drawn delays wrapped negative
        "uniform:0-9223372036854775000",
    ],
)
def test_a_delay_beyond_any_stream_is_bad_usage(stream_path, tmp_path, capsys, delay):
    args = ["replay", str(stream_path), "--learner", "nmc", "--label-delay", delay]
    assert cli.main([*args, "--out", str(tmp_path)]) == 2
    assert "at most 1099511627776 samples" in capsys.readouterr().err


def test_a_stream_whose_ids_repeat_is_refused_before_anything_is_learned(tmp_path, capsys):
    """Ids join delayed labels to their samples: with repeated ids a delayed replay scored the
    wrong predictions and exited 0 (A_last 20.85% instead of 91.27%)."""
    path = tmp_path / "digits.jsonl"
    assert cli.main(["schedule", "si-blurry", "--dataset", "digits", "--out", str(path)]) == 0
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines[1:]]
    events[40]["id"] = events[7]["id"]
    path.write_text("\n".join([lines[0], *(json.dumps(e) for e in events)]) + "\n")
    out = ["--out", str(tmp_path / "o")]
    for args in (
        ["replay", str(path), "--learner", "nmc", "--label-delay", "5", *out],
        ["replay", str(path), "--learner", "nmc", *out],
        # publish too: a published stream must not diverge from its replay
        ["publish", str(path), "--bootstrap", "127.0.0.1:9", "--topic", "t", "--label-delay", "5"],
    ):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"{path}:42: event 40 has id {events[7]['id']}, which an earlier event" in err
