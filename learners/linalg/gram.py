"""The ridge statistics G = HᵀH of a lazy head, kept as their lower triangle.

G is symmetric, so a head keeps only its lower triangle (diagonal included) up to date, and
everything that reads it reads that triangle (:func:`learners.linalg.cholesky.cholesky`, a merge by
addition) or the full matrix rebuilt by :func:`symmetric` (checkpoints):

- :func:`add_gram` adds HᵀH to the lower triangle block row by block row, the work of BLAS
  ``syrk``, which torch does not expose: about 60% of the flops of ``G.addmm_(H.T, H)``
  (timings in docs/performance-notes.md).
- :func:`symmetric` rebuilds the full matrix from its lower triangle.
"""

from __future__ import annotations

import torch

BLOCK = 512
"""Rows of G per product. The diagonal blocks are computed in full, so smaller blocks do less
work but run more, shorter products; 512 rows beat 256 at d = 2048, quiet or loaded
(docs/performance-notes.md)."""


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


def symmetric(G: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose lower triangle (diagonal included) is G's, as a new tensor."""
    return G.tril() + G.tril(-1).mT
