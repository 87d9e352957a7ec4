"""Batch validation's finite check: one float64 sum must refuse exactly what isfinite refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.base import Problem
from stream.engine.batch import Batch
from stream.engine.validation import BatchError, outside_label_space, validate_batch

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


@pytest.mark.parametrize(
    ("num_classes", "labels", "levels", "expected"),
    [
        ((3,), [0, 2, 1], [0, 0, 0], None),
        ((3,), [0, 3, 1], [0, 0, 0], (1, "label", "label 3 outside [0, 3) at level 0")),
        ((3,), [0, -1, 1], [0, 0, 0], (1, "label", "label -1 outside [0, 3) at level 0")),
        ((3,), [0, 1, 1], [0, 0, 1], (2, "level", "level 1 outside [0, 1)")),
        ((3,), [], [], None),
        ((2, 5), [1, 4, 0], [0, 1, 1], None),
        ((2, 5), [1, 4, 2], [0, 1, 0], (2, "label", "label 2 outside [0, 2) at level 0")),
        ((2, 5), [1, 5, 0], [0, 1, 0], (1, "label", "label 5 outside [0, 5) at level 1")),
        ((2, 5), [1, 0, 0], [0, 2, -1], (1, "level", "level 2 outside [0, 2)")),
    ],
)
def test_the_first_sample_outside_the_label_space_is_named(num_classes, labels, levels, expected):
    found = outside_label_space(
        np.asarray(labels, dtype=np.int64),
        np.asarray(levels, dtype=np.int64),
        np.asarray(num_classes),
    )
    assert found == expected
