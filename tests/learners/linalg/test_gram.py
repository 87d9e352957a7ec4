"""The lower-triangle statistics of learners/linalg/gram.py against the full product HᵀH."""

from __future__ import annotations

import pytest
import torch

from learners.linalg.gram import add_gram, symmetric
from tests.support.learner_streams import relative_error

pytestmark = pytest.mark.usefixtures("single_thread")


def rows(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("dim", "block"), [(3, 4), (13, 4), (16, 4), (23, 5)])
def test_add_gram_adds_HtH_to_the_lower_triangle_only(dim, block):
    G = torch.randn(dim, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = G.clone()
    H = rows(7, dim)
    add_gram(G, H, block=block)
    lower = torch.ones(dim, dim, dtype=torch.bool).tril()
    assert relative_error(G[lower], (before + H.T @ H)[lower]) <= 1e-14
    # Above the diagonal blocks nothing was written.
    blocks = torch.arange(dim) // block
    above = blocks[:, None] < blocks[None, :]
    assert torch.equal(G[above], before[above])


def test_symmetric_mirrors_the_lower_triangle():
    G = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S = symmetric(G)
    assert torch.equal(S, S.mT) and torch.equal(S.tril(), G.tril())
    assert torch.equal(symmetric(S), S)  # a checkpoint round trip stores the same bits
