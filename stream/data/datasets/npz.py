"""The generic ``npz:PATH`` format users bring their own data in (docs/datasets.md).

Keys: ``X_train``, ``y_train``, ``X_test``, ``y_test``; optional ``class_names``,
``y_train_levels``/``y_test_levels`` (hierarchy, column 0 coarsest, last column = y) and
``level_names``. Other keys are ignored. Object arrays are refused (they would need pickle).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from stream.data.datasets.dataset import Dataset, DatasetError

REQUIRED = ("X_train", "y_train", "X_test", "y_test")


def load(spec: str, argument: str | None) -> Dataset:
    if not argument:
        raise DatasetError("npz needs a path: npz:PATH")
    path = Path(argument)
    if not path.is_file():
        raise DatasetError(f"npz: file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"npz: {path} is not a readable .npz file ({exc})") from None
    with archive:
        missing = [key for key in REQUIRED if key not in archive.files]
        if missing:
            raise DatasetError(f"npz: {path} lacks the keys {', '.join(missing)}")
        try:
            arrays = {key: archive[key] for key in archive.files}
        except ValueError as exc:
            raise DatasetError(f"npz: {path}: {exc} (object arrays are not allowed)") from None
    has_levels = "y_train_levels" in arrays or "y_test_levels" in arrays
    return Dataset(
        spec=spec,
        X_train=arrays["X_train"],
        y_train=arrays["y_train"],
        X_test=arrays["X_test"],
        y_test=arrays["y_test"],
        class_names=[str(n) for n in arrays.get("class_names", [])],
        y_train_levels=arrays.get("y_train_levels") if has_levels else None,
        y_test_levels=arrays.get("y_test_levels") if has_levels else None,
        level_names=[str(n) for n in arrays.get("level_names", [])],
    )
