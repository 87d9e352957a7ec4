"""Symmetric positive definite kernels of the ridge heads, on the lower triangle only.

The ridge statistics G = HᵀH are symmetric, so a head keeps only their lower triangle
(diagonal included) up to date:

- :func:`add_gram` adds HᵀH to the lower triangle block row by block row, the work of BLAS
  ``syrk``, which torch does not expose: about half the flops of ``G.addmm_(H.T, H)``.
- :func:`cholesky` is a left-looking blocked Cholesky factorisation (LAPACK ``potrf`` on small
  diagonal blocks, one matrix product and one triangular solve per block column) that reads only
  the lower triangle. On a CPU at d = 2048 it takes under half the time of
  ``torch.linalg.cholesky``, whose single LAPACK call runs far below the matrix-product speed
  (``bench/analytic.py`` measures the effect on a whole stream).
- :func:`cholesky_solve` solves with the factor by two triangular solves.
- :func:`symmetric` rebuilds the full matrix from its lower triangle, for checkpoints.
"""

from __future__ import annotations

import torch

BLOCK = 256
"""Rows per block: large enough for the products to run near peak, small enough that the
blocks left unshared by symmetry (the diagonal blocks, done in full) cost little."""


class NotPositiveDefinite(ValueError):
    """The matrix to factorise is not (numerically) positive definite."""


def add_gram(G: torch.Tensor, H: torch.Tensor, block: int = BLOCK) -> None:
    """G += HᵀH on the lower triangle of G (H: [rows, d], G: [d, d]).

    Each block row of G gets the product of its columns of H with every column of H up to the
    end of its diagonal block, so the strict upper triangle outside the diagonal blocks is left
    untouched (and stale): readers of G must read only its lower triangle.
    """
    dim = G.shape[0]
    for start in range(0, dim, block):
        end = min(start + block, dim)
        G[start:end, :end].addmm_(H[:, start:end].T, H[:, :end])


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
            # Panel P ← P D⁻ᵀ, solved as D X = Pᵀ: the transposed view of a row-major panel is
            # column-major, the layout LAPACK wants, which saves torch a copy of the panel.
            panel = L[end:, start:end]
            panel.copy_(torch.linalg.solve_triangular(factor, panel.mT, upper=False).mT)
    return L.tril_()


def cholesky_solve(B: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(LLᵀ)⁻¹ B for a lower Cholesky factor L, as two triangular solves.

    ``torch.cholesky_solve`` gives the same result but copies L into LAPACK's layout on every
    call, which at d = 8192 (512 MB) costs several times the solve itself.
    """
    forward = torch.linalg.solve_triangular(factor, B, upper=False)
    return torch.linalg.solve_triangular(factor.mT, forward, upper=True)


def symmetric(G: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose lower triangle (diagonal included) is G's, as a new tensor."""
    return G.tril() + G.tril(-1).mT
