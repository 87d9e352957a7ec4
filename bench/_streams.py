"""Benchmark inputs: a class-balanced, seeded subsample of a dataset and its Si-Blurry stream.

Benchmarks must run in minutes on two cores, so they learn from a few hundred images per class
instead of all 60 000 Fashion-MNIST images; the subsample is the same for every learner and seed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from stream.data.datasets import Dataset, load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.runs.recorded_run import PreparedStream, prepare

SI_BLURRY = {"tasks": 5, "disjoint": 50, "blurry": 10}


def subsample_rows(
    y: np.ndarray, per_class: int, classes: list[int], rng: np.random.Generator
) -> np.ndarray:
    """Sorted rows of ``per_class`` random samples of each class in ``classes``."""
    picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picked))


def subsample(
    spec: str,
    train_per_class: int,
    test_per_class: int,
    classes: list[int] | None = None,
    seed: int = 0,
) -> tuple[Dataset, np.ndarray]:
    """``train_per_class`` / ``test_per_class`` images of each of ``classes`` (all by default),
    relabelled ``0..len(classes)-1`` in the given order; and the training rows it took."""
    full = load_dataset(spec)
    classes = list(range(full.num_classes)) if classes is None else classes
    rng = np.random.default_rng(seed)
    train = subsample_rows(full.y_train, train_per_class, classes, rng)
    test = subsample_rows(full.y_test, test_per_class, classes, rng)
    relabel = np.full(full.num_classes, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    dataset = Dataset(
        spec=f"{spec}[classes={classes},train={train_per_class}/class,test={test_per_class}/class]",
        X_train=full.X_train[train],
        y_train=relabel[full.y_train[train]],
        X_test=full.X_test[test],
        y_test=relabel[full.y_test[test]],
        class_names=[full.class_names[c] for c in classes],
    )
    return dataset, train


def si_blurry_stream(
    dataset: Dataset, seed: int, directory: str | Path | None = None
) -> PreparedStream:
    """The Si-Blurry (T=5, N=50, M=10) stream of ``dataset`` for ``seed``, ready to replay."""
    directory = Path(directory or tempfile.mkdtemp(prefix="streamcl-bench-"))
    schedule, params = make_schedule("si-blurry", dataset, SI_BLURRY, seed)
    recorded = record_schedule(dataset, schedule, "si-blurry", params.model_dump(mode="json"), seed)
    path = write_stream(directory / f"si-blurry-{seed}.scl", recorded)
    return prepare(path, dataset)
