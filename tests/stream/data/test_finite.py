"""stream/data/finite.py: one exact finiteness test for every input, whichever path it takes."""

from __future__ import annotations

import numpy as np
import pytest

from stream.data.finite import PRODUCT_FROM, all_finite

SHAPES = {
    "small rows": (40, 1, 8, 8),
    "small flat": (300,),
    "large rows": (PRODUCT_FROM // 64 + 3, 64),
    "large flat": (PRODUCT_FROM + 5,),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("writeable", [True, False])
def test_extreme_finite_values_pass_and_one_nan_or_inf_anywhere_fails(dtype, shape, writeable):
    """Every value at the type's largest magnitude (whose plain sum overflows) and subnormals
    pass; a single NaN, inf or -inf at the start, middle or end fails."""
    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    base = np.where(rng.random(shape) < 0.5, info.max, -info.max).astype(dtype)
    base.reshape(-1)[::7] = info.tiny / 2  # subnormal
    base.flags.writeable = writeable
    assert all_finite(base)
    size = base.size
    for where in (0, size // 2, size - 1):
        for value in (np.nan, np.inf, -np.inf):
            bad = base.copy()
            bad.reshape(-1)[where] = value
            bad.flags.writeable = writeable
            assert not all_finite(bad), (where, value)


def test_arrays_with_nothing_to_check():
    assert all_finite(np.empty((0, 5), np.float32))
    assert all_finite(np.array(np.float32(3.0)))  # 0-d
    assert not all_finite(np.array(np.float64("nan")))
    assert all_finite(np.full((3, 3), 255, np.uint8))
    assert all_finite(np.arange(10))


def test_a_non_contiguous_view_is_checked_whole():
    x = np.zeros((PRODUCT_FROM // 16, 32), np.float32)
    x[5, 31] = np.nan
    assert not all_finite(x[:, 16:])
    assert all_finite(x[:, :16])
