"""The two problems the analytic-head benchmarks and the frontier in docs/analytic.md run on.

- ``synthetic``: 384-d features, 87 classes (the size of ViT-S features on a mid-size label
  space), 35 training and 20 test samples per class. Each class is a mixture of three unit
  Gaussians around centres drawn from N(0, 0.5²I), so a linear head on the raw features does not
  separate it perfectly.
- ``fashion-mnist``: 300 training and 100 test images per class of the installed Fashion-MNIST
  (784 pixels as features, 10 classes), the subsample of :mod:`bench._streams`.

Each is written as an ``npz:`` dataset (about 3,000 training samples, the issue's "first 3000
training samples") and scheduled Si-Blurry (T=5, N=50, M=10, seed 1), so that ``streamcl replay``
can run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench._streams import SI_BLURRY, subsample
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.runs.recorded_run import PreparedStream, prepare

DIM, CLASSES, TRAIN, TEST = 384, 87, 35, 20
MODES, SCALE = 3, 0.5
SEED = 1


def synthetic_npz(path: Path, train: int = TRAIN) -> Path:
    """The synthetic problem with ``train`` training samples per class."""
    rng = np.random.default_rng(0)
    centres = SCALE * rng.normal(size=(CLASSES, MODES, DIM))

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(CLASSES), per_class)
        mode = rng.integers(0, MODES, len(y))
        x = centres[y, mode] + rng.normal(size=(len(y), DIM))
        return x.astype(np.float32), y

    X_train, y_train = draw(train)
    X_test, y_test = draw(TEST)
    np.savez(path, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)
    return path


def fashion_npz(path: Path) -> Path:
    dataset, _ = subsample("fashion-mnist", 300, 100)
    flat = {
        "X_train": dataset.X_train.reshape(len(dataset.X_train), -1).astype(np.float32) / 255,
        "X_test": dataset.X_test.reshape(len(dataset.X_test), -1).astype(np.float32) / 255,
    }
    np.savez(path, y_train=dataset.y_train, y_test=dataset.y_test, **flat)
    return path


DATASETS = {"synthetic": synthetic_npz, "fashion-mnist": fashion_npz}


def stream(name: str, directory: Path, train: int | None = None) -> PreparedStream:
    """The Si-Blurry stream of dataset ``name``, written under ``directory``, ready to replay;
    ``train``: training samples per class of the synthetic problem (default 35)."""
    path = directory / f"{name}.npz"
    npz = synthetic_npz(path, train) if train is not None else DATASETS[name](path)
    dataset = load_dataset(f"npz:{npz}")
    schedule, params = make_schedule("si-blurry", dataset, SI_BLURRY, SEED)
    recorded = record_schedule(dataset, schedule, "si-blurry", params.model_dump(mode="json"), SEED)
    return prepare(write_stream(directory / f"{name}.scl", recorded), dataset)
