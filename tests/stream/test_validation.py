"""Batch validation's finite check: one float64 sum must refuse exactly what isfinite refuses."""

from __future__ import annotations

import pytest
import torch

from learners.base import Problem
from stream.batch import Batch
from stream.validation import BatchError, validate_batch

PROBLEM = Problem(input_shape=(3,), num_classes=(2,))


def _batch(x: torch.Tensor) -> Batch:
    return Batch(
        x=x, y=torch.zeros(len(x), dtype=torch.long), level=torch.zeros(len(x), dtype=torch.long)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), float("-inf"), (float("inf"), float("-inf"))]
)
def test_nan_and_inf_are_refused_in_every_float_type(dtype, bad):
    x = torch.ones(4, 3, dtype=dtype)
    for i, value in enumerate(bad if isinstance(bad, tuple) else (bad,)):
        x[i, i] = value
    with pytest.raises(BatchError, match="NaN or inf"):
        validate_batch(_batch(x), PROBLEM)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_largest_finite_values_summed_are_still_accepted(dtype):
    big = torch.finfo(dtype).max
    validate_batch(_batch(torch.full((64, 3), big, dtype=dtype)), PROBLEM)
    validate_batch(_batch(torch.full((64, 3), -big, dtype=dtype)), PROBLEM)
