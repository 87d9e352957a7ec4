"""Whether an array holds only finite values: one exact test for every input from outside.

A dataset's arrays, a recorded stream's inputs, a wire message's and a micro-batch handed to the
event loop are all checked before anything learns from them. Each test here reads the values
once and makes no boolean array the size of the input:

- float32 below :data:`PRODUCT_FROM` values: their float64 sum, which cannot overflow (2^128 ·
  2^24 values stays far below float64's 2^1024), so it is finite exactly when every value is;
- float32 and float64 from there on: each row's dot product with a vector of 2^-32, finite exactly
  when the row is (a NaN or inf makes it NaN or inf, and the scale keeps a sum of finite values
  far from overflow). A matrix-vector product streams the rows at memory speed, half the time of
  a pairwise sum on 512-d features (bench/engine_overhead.py);
- other floating types (float16, longdouble): the sum and, where it is not finite, min and max,
  through which NaN propagates and an inf is one.

Integer and boolean arrays are finite.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# 2**-32: a product of any finite float32 (below 2**128) with it is below 2**96, so a row sum
# cannot overflow, and it is far from float32's subnormals for all but inputs below 2**-94; for
# float64 likewise, with room to spare.
_WEIGHT = 2.0**-32
# Values from which the matrix-vector product beats the float64 sum (its set-up costs a few
# microseconds; the sum converts each float32 on the way).
PRODUCT_FROM = 1 << 16


def all_finite(values: np.ndarray) -> bool:
    """Whether every value of ``values`` is finite."""
    if values.size == 0 or not np.issubdtype(values.dtype, np.inexact):
        return True
    if values.dtype == np.float32 and values.size < PRODUCT_FROM:
        with np.errstate(invalid="ignore"):  # inf + -inf: NaN, no warning
            return math.isfinite(float(values.sum(dtype=np.float64)))
    if values.dtype in (np.float32, np.float64):
        rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        weights = np.full(rows.shape[1], _WEIGHT, dtype=values.dtype)
        if rows.flags.writeable:  # torch wraps only writable arrays without a warning
            products = torch.mv(torch.from_numpy(rows), torch.from_numpy(weights)).numpy()
        else:
            products = rows @ weights
        return bool(np.isfinite(products).all())
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(values.reshape(-1), dtype=values.dtype)):
            return True
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))
