"""``streamcl replay`` runs the analytic learners on a feature stream; ``streamcl learners``
documents their options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.cli.main import main
from tests.support.digits_stream import write_digits_stream
from tests.support.paths import REPO

ROOT = REPO
OPTIONS = {
    "acil": {"buffer_size": 96},
    "aef-ocl": {"buffer_size": 96, "refresh_every": 100},
    "ds-al": {"buffer_size": 96},
    "slda": {"shrinkage": 0.01},
}


def streamcl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # One thread: a stream of small batches is dominated by thread hand-offs on a shared machine.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def feature_stream(tmp_path_factory) -> Path:
    """A Si-Blurry stream over a small npz of 24-d features (8 separable classes)."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (8, 24))
    y_train, y_test = np.repeat(np.arange(8), 60), np.repeat(np.arange(8), 20)
    np.savez(
        folder / "features.npz",
        X_train=(centres[y_train] + rng.normal(0, 1, (len(y_train), 24))).astype(np.float32),
        y_train=y_train,
        X_test=(centres[y_test] + rng.normal(0, 1, (len(y_test), 24))).astype(np.float32),
        y_test=y_test,
    )
    done = streamcl(
        "schedule", "si-blurry", "--dataset", f"npz:{folder / 'features.npz'}",
        "--tasks", "4", "--seed", "1", "--out", "stream.scl", cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder / "stream.scl"


@pytest.mark.parametrize("learner", sorted(OPTIONS))
def test_replay_runs_the_analytic_learner(feature_stream, learner):
    folder = feature_stream.parent
    config = folder / f"{learner}.json"
    config.write_text(json.dumps(OPTIONS[learner]), encoding="utf-8")
    done = streamcl(
        "replay", str(feature_stream), "--learner", learner, "--config", str(config),
        "--eval-period", "100", "--device", "cpu", "--out", f"runs/{learner}", cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((folder / "runs" / learner / "results.json").read_text())
    assert results["learner"] == learner and results["samples"] == 480
    assert results["config"]["seed"] == 0 and len(results["curve"]) >= 4
    assert results["A_last"] > 0.9, results["A_last"]


def test_bad_option_is_one_line_and_exit_2(feature_stream):
    folder = feature_stream.parent
    config = folder / "bad.json"
    config.write_text(json.dumps({"solver": "inverse"}), encoding="utf-8")
    done = streamcl(
        "replay", str(feature_stream), "--learner", "acil", "--config", str(config), cwd=folder
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "solver" in done.stderr


@pytest.mark.parametrize("solver", ["auto", "woodbury"])
def test_a_gamma_too_small_for_the_features_is_one_line_and_exit_2(tmp_path, solver):
    """gamma 1e-300 on digits ended with ``failed: ValueError`` (auto) or torch's
    ``_LinAlgError`` naming a leading minor (woodbury), exit 1."""
    stream = tmp_path / "digits.scl"
    write_digits_stream(stream)
    config = tmp_path / "tiny-gamma.json"
    config.write_text(json.dumps({"gamma": 1e-300, "solver": solver}), encoding="utf-8")
    done = streamcl(
        "replay", str(stream), "--learner", "acil", "--config", str(config),
        "--log-level", "error", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "raise gamma" in done.stderr, done.stderr


def test_learners_lists_the_analytic_options(capsys):
    assert main(["learners"]) == 0
    listing = capsys.readouterr().out
    for line in (
        "acil  —  G-ACIL",
        "backbone.name: identity|mlp|cnn|vit|timm = 'identity'",
        "buffer_size: int | None = None  width d of the random buffer layer; null: by device",
        "solver: auto|lazy|woodbury = 'auto'  auto: keep HᵀH, HᵀY",
        "refresh_every: int = 1000  samples learned",
        "compensation_ratio: float = 0.6  C: weight of the compensation stream",
        "shrinkage: float = 0.0001  ε in Λ",
    ):
        assert line in listing, line
