"""The generic ``npz:PATH`` format users bring their own data in (docs/datasets.md).

Keys: ``X_train``, ``y_train``, ``X_test``, ``y_test``; optional ``class_names``,
``y_train_levels``/``y_test_levels`` (hierarchy, column 0 coarsest, last column = y) and
``level_names``. Other keys are ignored. Object arrays are refused (they would need pickle).

Sizes are checked on the arrays' headers and the archive's directory before any array is
read: an array's header must not declare more data than its member holds, nor more class or
level names than a dataset may have; the arrays read, with their labels as int64, must take
at most 4 GiB and at most this machine's memory; and, beyond 64 MiB, the compressed members
must not expand more than 1000-fold (a zip bomb: a few megabytes of zeros that inflate to
gigabytes).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from stream.data.datasets.dataset import (
    MAX_CLASSES,
    MAX_LEVELS,
    Dataset,
    DatasetError,
    check_bytes,
)

REQUIRED = ("X_train", "y_train", "X_test", "y_test")
KNOWN = (*REQUIRED, "class_names", "y_train_levels", "y_test_levels", "level_names")
LABELS = ("y_train", "y_test", "y_train_levels", "y_test_levels")
MAX_EXPANSION = 1000
"""How many times its compressed size a compressed member may expand to (deflate's own limit
is about 1032, reached only by constant data)."""
EXPANSION_FLOOR = 64 << 20
"""Bytes below which the expansion is not checked: too little to harm, however it packs."""


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
        class_names=_names(arrays, "class_names", path),
        y_train_levels=arrays.get("y_train_levels") if has_levels else None,
        y_test_levels=arrays.get("y_test_levels") if has_levels else None,
        level_names=_names(arrays, "level_names", path),
    )


def _names(arrays: dict[str, np.ndarray], key: str, path: Path) -> list[str]:
    """The strings of the one-dimensional array ``key`` (none when it is absent)."""
    names = arrays.get(key)
    if names is None:
        return []
    if names.ndim != 1:
        raise DatasetError(f"npz: {path}: {key} must be a list of names, got shape {names.shape}")
    return [str(n) for n in names]


def _check_sizes(archive: np.lib.npyio.NpzFile, keys: list[str], path: Path) -> None:
    """Refuse, before anything is allocated, an array whose ``.npy`` header declares more data
    than its member holds (numpy allocates the declared shape first), arrays that together
    exceed the bound on a dataset or this machine's memory, and compressed members that expand
    beyond :data:`MAX_EXPANSION` times their size. Only the keys the dataset reads are loaded
    at all."""
    zipped = archive.zip
    assert zipped is not None  # open until the archive is closed
    total = expanded = packed = 0
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
        names = {"class_names": MAX_CLASSES, "level_names": MAX_LEVELS}.get(key)
        if names is not None and math.prod(shape) > names:
            # each becomes a Python string: tens of bytes apiece, whatever the array's size
            raise DatasetError(
                f"npz: {path}: array {key} holds {math.prod(shape)} names, more than the "
                f"{names} a dataset may have"
            )
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - header
        if declared > held:
            raise DatasetError(
                f"npz: {path}: array {key}: its header declares {declared} bytes of data "
                f"({shape}, {dtype}), the file holds {held}"
            )
        # labels are cast to int64 once checked: that copy is allocated too
        total += declared + (8 * math.prod(shape) if key in LABELS else 0)
        if info.compress_type != zipfile.ZIP_STORED:
            expanded += info.file_size
            packed += info.compress_size
    if expanded > EXPANSION_FLOOR and expanded > MAX_EXPANSION * packed:
        raise DatasetError(
            f"npz: {path}: its compressed arrays expand from {packed} to {expanded} bytes, more "
            f"than {MAX_EXPANSION} times (a zip bomb?); store them uncompressed (np.savez) if "
            "they are real"
        )
    check_bytes(f"npz: {path}", total, "its arrays")
