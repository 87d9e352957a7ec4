"""Which rows of a micro-batch belong to which hierarchy level: the one place that splits them.

Every verb of :class:`learners.base.Learner` takes an optional ``level``: ``None`` means level 0
(the only level of a problem without a hierarchy). ``predict`` takes one level for the whole
batch; ``learn`` takes one level per sample, and a learner with a head per level fits each head
on the rows labelled at its level, which :func:`level_rows` yields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def padded_scores(
    level: torch.Tensor | None,
    num_classes: Sequence[int],
    rows: int,
    score: Callable[[Rows, int], torch.Tensor],
) -> torch.Tensor:
    """Scores ``[rows, max(num_classes)]`` of a batch whose samples each have their own
    ``level``: ``score(rows_at_level, level)`` for every level the batch touches, ``-inf``
    beyond a level's classes (the form of ``predict_then_learn``). With one level, ``score``'s
    own tensor."""
    if len(num_classes) == 1:
        return score(slice(None), 0)
    scores: torch.Tensor | None = None
    for lvl, at in level_rows(level, len(num_classes)):
        part = score(at, lvl)
        if scores is None:
            scores = part.new_full((rows, max(num_classes)), float("-inf"))
        scores[at, : num_classes[lvl]] = part
    if scores is None:  # no rows
        return torch.full((rows, max(num_classes)), float("-inf"))
    return scores
