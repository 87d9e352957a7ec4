"""Which rows of a micro-batch belong to which hierarchy level: the one place that splits them.

Every verb of :class:`learners.base.Learner` takes an optional ``level``: ``None`` means level 0
(the only level of a problem without a hierarchy). ``predict`` takes one level for the whole
batch; ``learn`` takes one level per sample, and a learner with a head per level fits each head
on the rows labelled at its level, which :func:`level_rows` yields.
"""

from __future__ import annotations

import torch

Rows = torch.Tensor | slice
# The per-sample levels a ``learn`` call takes: ``[B]`` int64, or None for level 0 throughout.
Levels = torch.Tensor | None


def level_index(level: int | None) -> int:
    """The level a ``predict`` call asks for: ``None`` is level 0."""
    return 0 if level is None else int(level)


def sample_levels(level: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """The per-sample levels of a ``learn`` call: ``None`` is level 0 for every sample of ``y``."""
    return torch.zeros_like(y) if level is None else level.to(y.device)


def level_rows(level: torch.Tensor | None, num_levels: int) -> list[tuple[int, Rows]]:
    """(level, rows labelled at that level) for every level the batch touches, in level order.

    The rows are a boolean mask, or ``slice(None)`` (every row, no mask to build) when the
    problem has one level or ``level`` is ``None``.
    """
    if num_levels == 1 or level is None:
        return [(0, slice(None))]
    return [(int(lvl), level == lvl) for lvl in level.unique().tolist()]
