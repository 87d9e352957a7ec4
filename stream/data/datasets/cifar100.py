"""CIFAR-100 "python version" (``train``, ``test``, ``meta`` pickles): 20 coarse, 100 fine labels.

The files are pickles. They are read with an unpickler that only rebuilds dicts, lists, strings,
bytes, numbers and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from stream.data.datasets.dataset import Dataset, DatasetError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"cifar100: missing file {path} (expected train, test and meta)")
    try:
        with path.open("rb") as handle:
            raw = _DataOnlyUnpickler(handle, encoding="bytes").load()
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
    data = np.asarray(content["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"cifar100: {path} data must be [n, 3072] uint8, got {data.shape}")
    fine = np.asarray(content["fine_labels"], dtype=np.int64)
    coarse = np.asarray(content["coarse_labels"], dtype=np.int64)
    if len(fine) != len(data) or len(coarse) != len(data):
        raise DatasetError(f"cifar100: {path} has {len(data)} images but other label counts")
    return data.reshape(-1, 3, 32, 32), fine, coarse


def load(spec: str, argument: str | None) -> Dataset:
    if not argument:
        raise DatasetError("cifar100 needs a directory: cifar100:DIR (with train, test, meta)")
    directory = Path(argument)
    X_train, fine_train, coarse_train = _split(directory / "train")
    X_test, fine_test, coarse_test = _split(directory / "test")
    meta = _load_pickle(directory / "meta")
    fine_names = [_text(n) for n in meta.get("fine_label_names", [])]
    num_fine = int(max(fine_train.max(), fine_test.max())) + 1
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
