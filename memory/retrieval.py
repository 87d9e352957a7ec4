"""Retrieval modes: which stored slots a replay batch of ``n`` holds.

- ``uniform`` — ``n`` distinct slots uniformly at random (i-Blurry's ER ``get_batch``).
- ``balanced`` over groups — classes for ``class_balanced``, hierarchy levels for ``per_level``:
  equal quotas per group, water-filled (a group with fewer samples than its quota gives the rest
  to the others; the indivisible remainder goes to random groups), uniform within a group. Group
  counts in a batch therefore differ by at most one unless a group ran out of samples, where
  i-Blurry's ``get_batch(use_weight=True)`` balances only in expectation.
- ``nearest`` — the stored samples nearest (squared L2) to the current stream batch's
  embeddings, taken rank by rank across the batch: every query's nearest, then every query's
  second nearest, ..., skipping repeats, until ``n``. When an approximate index finds fewer
  distinct neighbours, uniformly drawn slots fill the batch up.
"""

from __future__ import annotations

import numpy as np
import torch

from memory.faiss_index import EmbeddingIndex


def uniform(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(size, generator=generator)[:n]


def balanced_quotas(counts: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """How many of ``n`` draws each group with ``counts`` members gets (water-filling)."""
    quota = torch.zeros_like(counts)
    remaining = min(n, int(counts.sum()))
    while remaining > 0:
        open_groups = torch.nonzero(quota < counts).flatten()
        share = remaining // len(open_groups)
        if share == 0:
            lucky = open_groups[torch.randperm(len(open_groups), generator=generator)[:remaining]]
            quota[lucky] += 1
            break
        given = torch.clamp(counts[open_groups] - quota[open_groups], max=share)
        quota[open_groups] += given
        remaining -= int(given.sum())
    return quota


def balanced(groups: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` slots balanced over the values of ``groups[slot]``."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    quota = balanced_quotas(counts, n, generator)
    by_group = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    chosen = []
    for g in torch.nonzero(quota).flatten().tolist():
        members = by_group[int(starts[g]) : int(starts[g] + counts[g])]
        chosen.append(members[torch.randperm(len(members), generator=generator)[: int(quota[g])]])
    return torch.cat(chosen)


def nearest(
    index: EmbeddingIndex, queries: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` distinct slots nearest to ``queries`` (embeddings ``[B, d]``), rank by rank."""
    n = min(n, index.size)
    _, found = index.search(queries, n)
    ranked = found.T.reshape(-1).numpy()
    ranked = ranked[ranked >= 0]
    _, first = np.unique(ranked, return_index=True)
    chosen = torch.from_numpy(ranked[np.sort(first)][:n])
    if len(chosen) < n:
        rest = torch.ones(index.size, dtype=torch.bool)
        rest[chosen] = False
        others = torch.nonzero(rest).flatten()
        fill = others[torch.randperm(len(others), generator=generator)[: n - len(chosen)]]
        chosen = torch.cat([chosen, fill])
    return chosen
