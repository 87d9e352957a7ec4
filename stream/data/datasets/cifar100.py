"""CIFAR-100 "python version" (``train``, ``test``, ``meta`` pickles): 20 coarse, 100 fine labels.

The files are pickles. They are read with an unpickler that only rebuilds dicts, lists, strings,
bytes, numbers and numpy arrays, so a tampered file cannot run code, and what it rebuilds is
counted as it is read against the bound on a dataset (:class:`_Budgeted`). What they hold is
checked for the types the real files have before any of it is converted: ``data`` a uint8
array ``[n, 3072]``, each label list a flat list (or array) of integers, the names a list of
texts; so a nested list that shares its parts, which a small pickle can hold and numpy would
expand, is refused rather than expanded.
"""

from __future__ import annotations

import pickle
import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from stream.data.datasets.dataset import (
    MAX_CLASSES,
    MAX_DATASET_BYTES,
    Dataset,
    DatasetError,
    check_bytes,
)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


# What one pickle opcode may cost in memory beyond the bytes it reads: the largest object a
# single opcode builds from a byte or two (an empty dict or list, 64 bytes, and its reference).
_OBJECT_BYTES = 72


class _DataOnlyUnpickler(pickle._Unpickler):  # the Python one: it reads opcode by opcode
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


class _Budgeted:
    """A file whose reads are counted against ``budget`` bytes of memory: each read (the
    unpickler makes one per opcode, and one per payload) as one object of
    :data:`_OBJECT_BYTES` plus the bytes it returns. A pickle of a few bytes per empty list
    would otherwise expand some thirty times in memory before any check of its contents."""

    def __init__(self, handle: Any, budget: int, where: str) -> None:
        self.handle, self.left, self.where = handle, budget, where

    def _spend(self, count: int) -> None:
        """One read of ``count`` bytes."""
        self.left -= _OBJECT_BYTES + count
        if self.left < 0:
            raise DatasetError(
                f"{self.where}: its objects would take more than the "
                f"{MAX_DATASET_BYTES} bytes a dataset may (a pickle of many small objects?)"
            )

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self._spend(len(data))
        return data

    def readline(self) -> bytes:
        line = self.handle.readline()
        self._spend(len(line))
        return line

    def readinto(self, buffer: Any) -> int:
        count = self.handle.readinto(buffer)
        self._spend(count)
        return count


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"cifar100: missing file {path} (expected train, test and meta)")
    # what unpickling holds at once: the objects rebuilt (counted as they are read, below)
    check_bytes(f"cifar100: {path}", path.stat().st_size, "its contents")
    try:
        with path.open("rb") as handle:
            budgeted = _Budgeted(handle, MAX_DATASET_BYTES, f"cifar100: {path}")
            raw = _DataOnlyUnpickler(budgeted, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(f"cifar100: {path} is not a CIFAR-100 python pickle ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"cifar100: {path} does not hold a dict")
    return {_text(k): v for k, v in raw.items()}


def _split(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    content = _load_pickle(path)
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in content:
            raise DatasetError(f"cifar100: {path} lacks the key {key!r}")
    data = content["data"]
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3 * 32 * 32
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"cifar100: {path} data must be a [n, 3072] uint8 array, got {got}")
    fine = _labels(content["fine_labels"], path, "fine_labels")
    coarse = _labels(content["coarse_labels"], path, "coarse_labels")
    if len(fine) != len(data) or len(coarse) != len(data):
        raise DatasetError(f"cifar100: {path} has {len(data)} images but other label counts")
    return data.reshape(-1, 3, 32, 32), fine, coarse


def _labels(value: Any, path: Path, key: str) -> np.ndarray:
    """A flat list or array of integers as int64, or :class:`DatasetError` naming ``key``."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise DatasetError(
                f"cifar100: {path} {key} must be a flat list of integers, got an array of "
                f"{value.dtype} {value.shape}"
            )
        if value.size and (int(value.min()) < 0 or int(value.max()) > _MAX_LABEL):
            raise DatasetError(f"cifar100: {path} {key} holds a label outside 0..{_MAX_LABEL}")
        return value.astype(np.int64)
    if not isinstance(value, list):
        raise DatasetError(
            f"cifar100: {path} {key} must be a flat list of integers, got {type(value).__name__}"
        )
    for i, label in enumerate(value):
        if type(label) is not int or not 0 <= label <= _MAX_LABEL:
            raise DatasetError(
                f"cifar100: {path} {key}[{i}] is {_short(label)}; labels are integers in "
                f"0..{_MAX_LABEL}"
            )
    return np.asarray(value, dtype=np.int64)


_MAX_LABEL = MAX_CLASSES - 1


def _short(value: Any) -> str:
    # reprlib: a nested list that shares its parts would print as 2**depth items
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxstring, short.maxother = 3, 4, 40, 40
    return short.repr(value)


def load(spec: str, argument: str | None) -> Dataset:
    if not argument:
        raise DatasetError("cifar100 needs a directory: cifar100:DIR (with train, test, meta)")
    directory = Path(argument)
    X_train, fine_train, coarse_train = _split(directory / "train")
    X_test, fine_test, coarse_test = _split(directory / "test")
    meta = _load_pickle(directory / "meta")
    names = meta.get("fine_label_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str | bytes) for n in names):
        raise DatasetError(
            f"cifar100: {directory / 'meta'} fine_label_names must be a list of names"
        )
    fine_names = [_text(n) for n in names]
    if not len(fine_test):
        raise DatasetError(f"cifar100: {directory / 'test'} holds no images")
    num_fine = int(max(fine_train.max(initial=0), fine_test.max())) + 1
    return Dataset(
        spec=spec,
        X_train=X_train,
        y_train=fine_train,
        X_test=X_test,
        y_test=fine_test,
        class_names=fine_names if len(fine_names) == num_fine else [],
        y_train_levels=np.stack([coarse_train, fine_train], axis=1),
        y_test_levels=np.stack([coarse_test, fine_test], axis=1),
        level_names=["coarse", "fine"],
    )
