"""The in-memory dataset every loader returns, the one error a bad dataset raises, and the
bounds every loader holds a dataset to before it allocates one.

Bounds (far above any real dataset, far below what exhausts a machine):

- :data:`MAX_CLASSES` classes per level and :data:`MAX_LEVELS` levels, the same bounds a
  recorded stream's header has, checked on the labels as stored, before any list of class
  names is built or any label is cast;
- :data:`MAX_DATASET_BYTES` (4 GiB) of arrays, and no more than this machine's memory, checked
  on the sizes a loader declares or computes before it reads or generates them
  (:func:`check_bytes`);
- generator seeds in ``[0, learners.base.MAX_SEED]``, the learners' bound (numpy's legacy
  generators, which river uses, take no more).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from learners.base import MAX_LEVELS, Problem
from learners.machine_memory import memory_bytes
from stream.data.finite import all_finite

MAX_CLASSES = 1 << 24
MAX_DATASET_BYTES = 4 << 30


class DatasetError(ValueError):
    """A dataset that is missing, malformed or inconsistent; the message says what and where."""


def check_bytes(where: str, needed: int, what: str, machine: bool = True) -> None:
    """Refuse ``needed`` bytes (``what`` says for what) beyond :data:`MAX_DATASET_BYTES` or,
    with ``machine``, beyond this machine's memory, before they are allocated."""
    memory = memory_bytes(torch.device("cpu")) if machine else None
    if memory is not None and needed > memory:
        raise DatasetError(
            f"{where}: {what} need about {needed} bytes, more than this machine's {memory}"
        )
    if needed > MAX_DATASET_BYTES:
        raise DatasetError(
            f"{where}: {what} need about {needed} bytes, more than the {MAX_DATASET_BYTES} "
            "a dataset may take"
        )


@dataclass
class Dataset:
    """Train and test splits with labels, optional class names and optional hierarchy.

    ``X_*`` are features ``[n, d]`` or images ``[n, C, H, W]`` (uint8 images are scaled to
    ``[0, 1]`` when turned into tensors). ``y_*_levels[:, l]`` is the label at hierarchy level
    ``l`` (0 coarsest); the last column equals ``y_*``. Without a hierarchy there is one level
    and ``y_*_levels`` is ``y_*[:, None]``.
    """

    spec: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)
    y_train_levels: np.ndarray | None = None
    y_test_levels: np.ndarray | None = None
    level_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._validate()
        if self.y_train_levels is None:
            self.y_train_levels = self.y_train[:, None]
            self.y_test_levels = self.y_test[:, None]
        if not self.level_names:
            self.level_names = (
                ["label"]
                if self.num_levels == 1
                else [f"level{lvl}" for lvl in range(self.num_levels)]
            )
        if len(self.level_names) != self.num_levels:
            raise DatasetError(
                f"{self.spec}: {len(self.level_names)} level names for {self.num_levels} levels"
            )
        if len(set(self.level_names)) != len(self.level_names):
            # predictions and metrics are keyed by level name
            raise DatasetError(f"{self.spec}: level names must differ, got {self.level_names}")
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes_per_level[-1])]
        if len(self.class_names) != self.num_classes_per_level[-1]:
            raise DatasetError(
                f"{self.spec}: {len(self.class_names)} class names for "
                f"{self.num_classes_per_level[-1]} classes"
            )
        self.parents = self._parent_maps()

    def _validate(self) -> None:
        where = self.spec
        for split, X, y in (
            ("train", self.X_train, self.y_train),
            ("test", self.X_test, self.y_test),
        ):
            if X.ndim not in (2, 3, 4):
                raise DatasetError(
                    f"{where}: X_{split} must be [n, d], [n, H, W] or [n, C, H, W], got shape {X.shape}"
                )
            if 0 in X.shape[1:]:
                raise DatasetError(
                    f"{where}: X_{split} has shape {X.shape}; every input dimension needs at "
                    "least one value"
                )
            if y.ndim != 1 or len(y) != len(X):
                raise DatasetError(
                    f"{where}: y_{split} must be [n] with n = {len(X)} (X_{split} rows), got {y.shape}"
                )
            if not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{where}: y_{split} must be integers, got {y.dtype}")
            if len(y) and y.min() < 0:
                raise DatasetError(f"{where}: y_{split} has negative labels")
            _check_label_bound(where, f"y_{split}", y)
            if X.dtype != np.uint8 and not np.issubdtype(X.dtype, np.floating):
                raise DatasetError(f"{where}: X_{split} must be uint8 or float, got {X.dtype}")
            if not all_finite(X):
                raise DatasetError(f"{where}: X_{split} contains NaN or inf")
        if len(self.X_train) == 0:
            raise DatasetError(f"{where}: the training split is empty")
        if self.X_train.shape[1:] != self.X_test.shape[1:]:
            raise DatasetError(
                f"{where}: train inputs {self.X_train.shape[1:]} and test inputs "
                f"{self.X_test.shape[1:]} differ in shape"
            )
        if self.X_train.ndim == 3:
            self.X_train = self.X_train[:, None]
            self.X_test = self.X_test[:, None]
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)
        if (self.y_train_levels is None) != (self.y_test_levels is None):
            raise DatasetError(f"{where}: give both y_train_levels and y_test_levels, or neither")
        if self.y_train_levels is not None and self.y_test_levels is not None:
            for split, levels, y in (
                ("train", self.y_train_levels, self.y_train),
                ("test", self.y_test_levels, self.y_test),
            ):
                if levels.ndim != 2 or len(levels) != len(y) or levels.shape[1] == 0:
                    raise DatasetError(
                        f"{where}: y_{split}_levels must be [n, L] with n = {len(y)} and L >= 1, "
                        f"got {levels.shape}"
                    )
                if not np.issubdtype(levels.dtype, np.integer) or (
                    len(levels) and levels.min() < 0
                ):
                    raise DatasetError(f"{where}: y_{split}_levels must be non-negative integers")
                if levels.shape[1] > MAX_LEVELS:
                    raise DatasetError(
                        f"{where}: y_{split}_levels has {levels.shape[1]} levels, more than "
                        f"the {MAX_LEVELS} a dataset may have"
                    )
                _check_label_bound(where, f"y_{split}_levels", levels)
                if not np.array_equal(levels[:, -1], y):
                    raise DatasetError(
                        f"{where}: the last column of y_{split}_levels must equal y_{split}"
                    )
            if self.y_train_levels.shape[1] != self.y_test_levels.shape[1]:
                raise DatasetError(f"{where}: train and test have different numbers of levels")
            self.y_train_levels = self.y_train_levels.astype(np.int64, copy=False)
            self.y_test_levels = self.y_test_levels.astype(np.int64, copy=False)

    def _parent_maps(self) -> list[list[int]]:
        """``parents[l][c]``: the level-``l`` class of every level-``l+1`` class ``c``."""
        assert self.y_train_levels is not None and self.y_test_levels is not None
        levels = np.concatenate([self.y_train_levels, self.y_test_levels])
        maps = []
        for lvl in range(self.num_levels - 1):
            parent = np.full(self.num_classes_per_level[lvl + 1], -1, dtype=np.int64)
            for par, child in np.unique(levels[:, lvl : lvl + 2], axis=0):
                if parent[child] not in (-1, par):
                    raise DatasetError(
                        f"{self.spec}: class {child} of level {lvl + 1} has two parents at level "
                        f"{lvl} ({parent[child]} and {par}); levels must form a tree"
                    )
                parent[child] = par
            orphans = np.flatnonzero(parent < 0)
            if len(orphans):
                raise DatasetError(
                    f"{self.spec}: class {int(orphans[0])} of level {lvl + 1} has no samples, so "
                    f"its class at level {lvl} is unknown; number each level's classes "
                    "0..K-1 without gaps"
                )
            maps.append(parent.tolist())
        return maps

    @property
    def num_levels(self) -> int:
        assert self.y_train_levels is not None
        return int(self.y_train_levels.shape[1])

    @property
    def num_classes_per_level(self) -> list[int]:
        assert self.y_train_levels is not None and self.y_test_levels is not None
        both = np.concatenate([self.y_train_levels, self.y_test_levels])
        return [int(both[:, lvl].max()) + 1 for lvl in range(self.num_levels)]

    @property
    def num_classes(self) -> int:
        return self.num_classes_per_level[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.X_train.shape[1:])

    def problem(self) -> Problem:
        """The learner-facing description of this dataset."""
        try:
            return Problem(
                input_shape=self.input_shape,
                num_classes=tuple(self.num_classes_per_level),
                level_names=tuple(self.level_names),
                parents=tuple(tuple(p) for p in self.parents),
            )
        except ValueError as exc:  # what the checks above let through, named as the dataset's
            raise DatasetError(f"{self.spec}: {exc}") from None

    def fingerprint(self) -> dict[str, object]:
        """A few numbers a recorded stream keeps to check it is replayed on the same data; with
        a hierarchy also its level names and a digest of its parent maps (a regenerated tree
        with the same class counts is other data). Streams recorded before these keys lack
        them, and are checked on the keys they have."""
        found: dict[str, object] = {
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes_per_level,
        }
        if self.num_levels > 1:
            found["level_names"] = list(self.level_names)
            tree = json.dumps(self.parents, separators=(",", ":")).encode()
            found["parents_sha256"] = hashlib.sha256(tree).hexdigest()
        return found


def _check_label_bound(where: str, name: str, labels: np.ndarray) -> None:
    """Refuse a label past :data:`MAX_CLASSES` while it has its stored type: a class count
    built from it would be allocated, and a uint64 one would wrap negative as int64."""
    if labels.size and int(labels.max()) >= MAX_CLASSES:
        raise DatasetError(
            f"{where}: {name} holds the label {int(labels.max())}; labels must be below "
            f"{MAX_CLASSES} (the classes a dataset may have)"
        )


def as_float_tensor(X: np.ndarray) -> torch.Tensor:
    """Inputs as float32: uint8 images scaled to ``[0, 1]``, floats as they are."""
    X = np.ascontiguousarray(X)
    if not X.flags.writeable:
        # a read-only array: learners get their own copy rather than an alias they cannot
        # write (and torch warns on wrapping one), whatever its type
        X = X.copy()
    tensor = torch.from_numpy(X)
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32).div_(255.0)
    return tensor.to(torch.float32)
