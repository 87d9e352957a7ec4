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
    index: EmbeddingIndex,
    queries: torch.Tensor,
    n: int,
    generator: torch.Generator,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` distinct slots nearest to ``queries`` (embeddings ``[B, d]``), rank by rank.

    ``exclude`` (a mask over the slots) marks the queries' own samples where they are stored
    already: each would be its own query's nearest, a copy of the stream batch instead of a
    replay. They are taken last, only when nothing else is left."""
    n = min(n, index.size)
    skipped = np.zeros(index.size, dtype=bool) if exclude is None else exclude.numpy()
    _, found_tensor = index.search(queries, min(n + int(skipped.sum()), index.size))
    found = found_tensor.numpy()
    # each query's neighbours that count (found, not left out), moved to the front in order,
    # so that rank r is every query's r-th of those
    usable = (found >= 0) & ~skipped[np.maximum(found, 0)]
    order = np.argsort(~usable, axis=1, kind="stable")
    found, usable = np.take_along_axis(found, order, 1), np.take_along_axis(usable, order, 1)
    ranked = found.T.reshape(-1)[usable.T.reshape(-1)]
    _, first = np.unique(ranked, return_index=True)
    chosen = torch.from_numpy(ranked[np.sort(first)][:n])
    if len(chosen) < n:
        rest = torch.ones(index.size, dtype=torch.bool)
        rest[chosen] = False
        fill = []
        for group in (rest & ~torch.from_numpy(skipped), rest & torch.from_numpy(skipped)):
            members = torch.nonzero(group).flatten()
            fill.append(members[torch.randperm(len(members), generator=generator)])
        chosen = torch.cat([chosen, torch.cat(fill)[: n - len(chosen)]])
    return chosen
