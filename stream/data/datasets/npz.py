"""The generic ``npz:PATH`` format users bring their own data in (docs/datasets.md).

Keys: ``X_train``, ``y_train``, ``X_test``, ``y_test``; optional ``class_names``,
``y_train_levels``/``y_test_levels`` (hierarchy, column 0 coarsest, last column = y) and
``level_names``. Other keys are ignored. Object arrays are refused (they would need pickle).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from learners.machine_memory import memory_bytes
from stream.data.datasets.dataset import Dataset, DatasetError

REQUIRED = ("X_train", "y_train", "X_test", "y_test")
KNOWN = (*REQUIRED, "class_names", "y_train_levels", "y_test_levels", "level_names")


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
        wanted = [key for key in KNOWN if key in archive.files]
        _check_sizes(archive, wanted, path)
        try:
            arrays = {key: archive[key] for key in wanted}
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


def _check_sizes(archive: np.lib.npyio.NpzFile, keys: list[str], path: Path) -> None:
    """Refuse, before anything is allocated, an array whose ``.npy`` header declares more data
    than its member holds (numpy allocates the declared shape first), and arrays that together
    exceed this machine's memory. Only the keys the dataset reads are loaded at all."""
    zipped = archive.zip
    assert zipped is not None  # open until the archive is closed
    total = 0
    for key in keys:
        try:
            info = zipped.getinfo(f"{key}.npy")
            with zipped.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header = member.tell()
        except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"npz: {path}: array {key}: unreadable header ({exc})") from None
        if dtype.hasobject:
            raise DatasetError(f"npz: {path}: array {key}: object arrays are not allowed")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - header
        if declared > held:
            raise DatasetError(
                f"npz: {path}: array {key}: its header declares {declared} bytes of data "
                f"({shape}, {dtype}), the file holds {held}"
            )
        total += declared
    memory = memory_bytes(torch.device("cpu"))
    if memory is not None and total > memory:
        raise DatasetError(
            f"npz: {path}: its arrays hold {total} bytes, more than this machine's {memory}"
        )
