"""Cholesky factorisation and solves of the ridge heads, reading the lower triangle only.

A head keeps its statistics G = HᵀH as their lower triangle (:mod:`learners.linalg.gram`), so:

- :func:`cholesky` is a left-looking blocked Cholesky factorisation (LAPACK ``potrf`` on small
  diagonal blocks, one matrix product and one triangular solve per block column) that reads only
  the lower triangle. On a two-core CPU at d = 2048 it takes under half the time of
  ``torch.linalg.cholesky``, whose single LAPACK call runs far below the matrix-product speed,
  on a quiet machine and on a busy one (``bench/analytic.py`` measures the effect on a whole
  stream).
- :func:`cholesky_solve` solves with the factor by two triangular solves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

BLOCK = 256
"""Rows per block: large enough for the block column products to run near peak, small enough
that the diagonal blocks (LAPACK on one thread) and their panels' solves stay cheap."""


class NotPositiveDefinite(ValueError):
    """The matrix to factorise is not (numerically) positive definite."""


def cholesky(A: torch.Tensor, out: torch.Tensor | None = None, block: int = BLOCK) -> torch.Tensor:
    """The lower Cholesky factor L of A (LLᵀ = A), reading only A's lower triangle.

    ``out`` (may be ``A`` itself) receives L, zeros above the diagonal; a new tensor when None.
    Left-looking: block column k is first brought up to date with the product of the factor's
    columns left of it, then its diagonal block is factorised by LAPACK and the panel below it
    solved against that block. Raises :class:`NotPositiveDefinite` when a diagonal block has no
    finite Cholesky factor (A not positive definite, or not finite).
    """
    L = torch.empty_like(A) if out is None else out
    if L is not A:
        L.copy_(A)
    dim = L.shape[0]
    for start in range(0, dim, block):
        end = min(start + block, dim)
        if start > 0:
            L[start:, start:end].addmm_(L[start:, :start], L[start:end, :start].T, alpha=-1)
        diagonal = L[start:end, start:end]
        with one_thread(L):
            factor, info = torch.linalg.cholesky_ex(diagonal)
            row = int(info)
            if row == 0 and not bool(factor.diagonal().isfinite().all()):
                # LAPACK lets an infinite pivot through; the solution would be all NaN.
                row = 1 + int(factor.diagonal().isfinite().logical_not().nonzero()[0])
            if row != 0:
                raise NotPositiveDefinite(
                    f"not positive definite (the factorisation breaks down at row {start + row})"
                )
            diagonal.copy_(factor)
            if end < dim:
                # Panel P ← P D⁻ᵀ, solved as D X = Pᵀ: the transposed view of a row-major panel
                # is column-major, the layout LAPACK wants, which saves torch a copy of it.
                panel = L[end:, start:end]
                panel.copy_(torch.linalg.solve_triangular(factor, panel.mT, upper=False).mT)
    return L.tril_()


@contextmanager
def one_thread(like: torch.Tensor) -> Iterator[None]:
    """Run the CPU operations inside on one thread (torch's setting is process-wide).

    For the factorisation of a diagonal block and the triangular solve of its panel: MKL splits
    them over every thread, though a 256-row block gains little from that, and each of their
    many internal barriers waits out the time slice of any thread the OS has preempted: on a
    loaded machine one thread is several times faster, on a quiet one it costs a little
    (docs/performance-notes.md).
    """
    threads = torch.get_num_threads()
    if like.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cholesky_solve(B: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(LLᵀ)⁻¹ B for a lower Cholesky factor L, as two triangular solves.

    ``torch.cholesky_solve`` gives the same result but copies L into LAPACK's layout on every
    call, which at d = 8192 (512 MB) costs several times the solve itself.
    """
    forward = torch.linalg.solve_triangular(factor, B, upper=False)
    return torch.linalg.solve_triangular(factor.mT, forward, upper=True)
