"""Class moments (learners/linalg/class_moments.py): exact for any split of the stream, both kinds
of second moment, and merge equal to seeing both streams."""

from __future__ import annotations

import pytest
import torch

from learners.linalg.class_moments import ClassMoments
from learners.state.safetensors_io import state_from_bytes, state_to_bytes

CLASSES, DIM = 5, 6


def stream(seed: int, n: int = 1500) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    # a large mean is where E[x²] − E[x]² would lose its digits
    x = 100 + 3 * torch.randn(n, DIM, generator=generator, dtype=torch.float64) + y[:, None]
    return x, y


def split_three_ways(second: str) -> tuple[ClassMoments, ClassMoments]:
    """The same stream absorbed in batches of 37, and as two halves merged."""
    x, y = stream(0)
    whole, merged = ClassMoments(CLASSES, DIM, second), ClassMoments(CLASSES, DIM, second)
    other = ClassMoments(CLASSES, DIM, second)
    for start in range(0, len(y), 37):
        whole.update(x[start : start + 37], y[start : start + 37])
    merged.update(x[:1000], y[:1000])
    other.update(x[1000:], y[1000:])
    merged.merge(other)
    return whole, merged


def test_diagonal_moments_match_the_data_for_any_split():
    x, y = stream(0)
    for moments in split_three_ways("diagonal"):
        for c in range(CLASSES):
            rows = x[y == c]
            assert moments.counts[c] == len(rows)
            assert torch.allclose(moments.mean[c], rows.mean(0), rtol=1e-12, atol=0)
            assert torch.allclose(moments.std()[c], rows.std(0), rtol=1e-10, atol=0)


def test_pooled_scatter_is_the_within_class_scatter_for_any_split():
    x, y = stream(0)
    expected = torch.zeros(DIM, DIM, dtype=torch.float64)
    for c in range(CLASSES):
        centred = x[y == c] - x[y == c].mean(0)
        expected += centred.T @ centred
    for moments in split_three_ways("pooled"):
        assert torch.allclose(moments.m2, expected, rtol=1e-10, atol=0)
        assert torch.allclose(moments.mean[2], x[y == 2].mean(0), rtol=1e-12, atol=0)


def test_first_sample_of_a_class_adds_no_scatter():
    """Deep SLDA weighs x − μ_y by the total count, so a new class's first sample (μ_y = 0 then)
    adds xxᵀ to Σ; the within-class scatter of single samples is zero."""
    stats = ClassMoments(3, 4, "pooled")
    x = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3]], dtype=torch.float64)
    for row in range(3):
        stats.update(x[row : row + 1], torch.tensor([row]))
    assert torch.equal(stats.m2, torch.zeros(4, 4, dtype=torch.float64))
    assert torch.equal(stats.mean, x)


def test_state_round_trips_exactly_and_refuses_another_shape():
    x, y = stream(1, n=200)
    moments = ClassMoments(CLASSES, DIM, "diagonal")
    moments.update(x, y)
    restored = ClassMoments(CLASSES, DIM, "diagonal")
    restored.load_state_dict(state_from_bytes(state_to_bytes(moments.state_dict())))
    for name in ("counts", "mean", "m2"):
        assert torch.equal(getattr(restored, name), getattr(moments, name))
    with pytest.raises(ValueError, match=r"m2 have shape \(5, 6\), expected \(6, 6\)"):
        ClassMoments(CLASSES, DIM, "pooled").load_state_dict(moments.state_dict())


def test_merge_refuses_another_kind():
    with pytest.raises(ValueError, match="different shapes or kinds"):
        ClassMoments(CLASSES, DIM, "pooled").merge(ClassMoments(CLASSES, DIM, "diagonal"))


def test_std_needs_the_diagonal_kind():
    with pytest.raises(ValueError, match="diagonal"):
        ClassMoments(CLASSES, DIM, "pooled").std()
