"""The IDX format of MNIST and Fashion-MNIST (``*-idx3-ubyte[.gz]``), read without a library."""

from __future__ import annotations

import gzip
import math
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


MAX_IDX_BYTES = 1 << 34
"""The largest payload an IDX header may declare (16 GiB; Fashion-MNIST's largest is 47 MB)."""


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not). Only the bytes its header
    declares are read, so a compressed file cannot decompress into more than that."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
                raise DatasetError(f"{path}: not an IDX file (bad magic number)")
            ndim = magic[3]
            if not 1 <= ndim <= 8:
                raise DatasetError(f"{path}: IDX header declares {ndim} dimensions")
            dims = handle.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DatasetError(f"{path}: IDX header truncated")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_DTYPES[magic[2]])
            expected = math.prod(shape) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DatasetError(
                    f"{path}: IDX header declares shape {shape}, {expected:,} bytes, more than "
                    f"{MAX_IDX_BYTES:,}"
                )
            payload = handle.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc})") from None
    if len(payload) != expected:
        found = f"more than {expected}" if len(payload) > expected else str(len(payload))
        raise DatasetError(f"{path}: IDX payload has {found} bytes, shape {shape} needs {expected}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)
