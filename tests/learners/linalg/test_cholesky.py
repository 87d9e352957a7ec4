"""The blocked Cholesky of learners/linalg/cholesky.py against LAPACK's, on the lower triangle only.

Small blocks (4 or 5 rows) with sizes that do not divide evenly exercise every block shape the
heads meet at d = 2048 or 8192 with 256-row blocks.
"""

from __future__ import annotations

import pytest
import torch

from learners.linalg.cholesky import NotPositiveDefinite, cholesky, cholesky_solve
from tests.support.learner_streams import relative_error

pytestmark = pytest.mark.usefixtures("single_thread")


def gram_rows(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def spd(dim: int, seed: int = 0) -> torch.Tensor:
    """A ridge matrix HᵀH + γI with fewer rows than columns, as early in a stream."""
    H = gram_rows(dim // 2, dim, seed)
    A = H.T @ H
    A.diagonal().add_(0.1)
    return A


@pytest.mark.parametrize(("dim", "block"), [(1, 4), (4, 4), (13, 4), (23, 5), (40, 256)])
def test_blocked_cholesky_equals_lapack_and_reads_the_lower_triangle_only(dim, block):
    A = spd(dim)
    L = cholesky(A, block=block)
    expected = torch.linalg.cholesky(A)
    assert relative_error(L, expected) <= 1e-12
    assert torch.equal(L, L.tril())
    stale = A.tril() + torch.full_like(A, 1e300).triu(1)  # an upper triangle left stale
    assert torch.equal(cholesky(stale, block=block), L)
    in_place = A.clone()
    assert cholesky(in_place, out=in_place, block=block) is in_place
    assert torch.equal(in_place, L)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_cholesky_of_a_matrix_that_is_not_positive_definite_raises(bad):
    A = spd(13)
    A[9, 9] = bad  # in the third 4-row block: the error comes from a later block column
    with pytest.raises(NotPositiveDefinite, match="row 10"):
        cholesky(A, block=4)


def test_cholesky_solve_inverts_the_factored_matrix():
    A = spd(23)
    B = gram_rows(23, 3, seed=2)
    X = cholesky_solve(B, cholesky(A, block=5))
    assert relative_error(X, torch.linalg.solve(A, B)) <= 1e-10


def test_cholesky_leaves_torch_thread_count_as_it_found_it():
    """The diagonal blocks run on one thread; the caller's setting comes back, error or not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cholesky(spd(13), block=4)
        assert torch.get_num_threads() == 2
        bad = spd(13)
        bad[5, 5] = -1.0
        with pytest.raises(NotPositiveDefinite):
            cholesky(bad, block=4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
