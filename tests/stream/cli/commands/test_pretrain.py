"""``streamcl pretrain`` end to end, and its one-line usage errors."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from learners.backbones.pretrain import METADATA_KEY
from stream.cli.commands.pretrain import parse_classes
from stream.cli.errors import UsageError
from tests.support.cli_runner import streamcl


def test_pretrain_a_first_session_then_replay_with_the_weights(tmp_path):
    config = tmp_path / "vit.json"
    config.write_text(
        json.dumps({"vit": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}})
    )
    done = streamcl(
        "pretrain", "--dataset", "digits", "--classes", "0-4", "--backbone", "vit",
        "--config", str(config), "--epochs", "1", "--max-samples", "300",
        "--out", str(tmp_path / "vit.safetensors"), "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "classes [0, 1, 2, 3, 4]" in done.stdout and "test accuracy" in done.stdout
    # a frozen-backbone learner on the pretrained ViT
    learner = {
        "backbone": {
            "name": "vit", "weights": str(tmp_path / "vit.safetensors"),
            "vit": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2},
        },
    }  # fmt: skip
    (tmp_path / "nmc.json").write_text(json.dumps(learner))
    stream = tmp_path / "s.scl"
    assert (
        streamcl(
            "schedule", "si-blurry", "--dataset", "digits", "--out", str(stream), cwd=tmp_path
        ).returncode
        == 0
    )
    replayed = streamcl(
        "replay", str(stream), "--learner", "nmc", "--config", str(tmp_path / "nmc.json"),
        "--eval-period", "0", "--device", "cpu", "--out", str(tmp_path / "run"), cwd=tmp_path,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["backbone"]["weights"] == str(tmp_path / "vit.safetensors")
    assert results["A_last"] > 0.3  # 10 classes: chance is 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "0-12"], "outside the dataset's classes 0-9"),
        (["--classes", "a"], "not a class id"),
        (["--out", "w.pt"], "written as .safetensors"),
        (["--lr", "inf"], "lr: Input should be a finite number"),
        (["--classes", "3"], "only class 3; pretraining needs at least 2 classes"),
        (["--max-samples", "1"], "pretraining needs at least 2 classes"),
        (["--lr", "1e6", "--epochs", "1"], "training diverged (loss nan at epoch 1); lower --lr"),
    ],
)
def test_bad_usage_is_one_line_exit_2(tmp_path, args, message):
    base = {"--dataset": "digits", "--backbone": "mlp", "--out": "w.safetensors"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair] + args[len(args) :]
    done = streamcl("pretrain", *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.safetensors"))  # nothing written


def test_a_sample_missing_test_classes_scores_only_the_trained_ones(tmp_path):
    done = streamcl(
        "pretrain", "--dataset", "digits", "--backbone", "mlp", "--max-samples", "3",
        "--epochs", "1", "--out", "w/t.safetensors", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test samples of the trained classes" in done.stdout
    with safe_open(str(tmp_path / "w" / "t.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    assert 0 < meta["test_samples"] < 355  # of the 355 test samples of digits, 10 classes


def test_replay_with_misfit_weights_is_exit_2(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"junk")
    (tmp_path / "er.json").write_text(
        json.dumps({"backbone": {"weights": str(tmp_path / "w.safetensors")}})
    )
    assert (
        streamcl(
            "schedule", "si-blurry", "--dataset", "digits", "--out", "s.scl", cwd=tmp_path
        ).returncode
        == 0
    )
    done = streamcl("replay", "s.scl", "--learner", "er", "--config", "er.json", cwd=tmp_path)
    assert done.returncode == 2 and "cannot read backbone weights" in done.stderr


def test_parse_classes():
    assert parse_classes("0-2, 5,7-8", 10) == [0, 1, 2, 5, 7, 8]
    with pytest.raises(UsageError):
        parse_classes("3-1", 10)
