"""The IDX format of MNIST and Fashion-MNIST (``*-idx3-ubyte[.gz]``), read without a library."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from stream.data.datasets.dataset import DatasetError

_DTYPES: dict[int, str | type[np.generic]] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"{path}: IDX payload has {len(data) - header} bytes, shape {shape} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
