"""learners/levels.py: optional levels and the one per-level row split."""

from __future__ import annotations

import torch

from learners.levels import level_index, level_rows, padded_scores, sample_levels


def test_none_is_level_zero():
    assert level_index(None) == 0 and level_index(2) == 2
    y = torch.tensor([3, 1, 2])
    assert sample_levels(None, y).tolist() == [0, 0, 0]
    assert sample_levels(torch.tensor([1, 0, 1]), y).tolist() == [1, 0, 1]


def test_rows_of_each_touched_level_in_order():
    level = torch.tensor([2, 0, 2, 2])
    split = level_rows(level, 3)
    assert [lvl for lvl, _ in split] == [0, 2]
    assert [rows.tolist() for _, rows in split] == [
        [False, True, False, False],
        [True, False, True, True],
    ]


def test_one_level_or_no_levels_take_every_row_without_a_mask():
    assert level_rows(torch.tensor([0, 0]), 1) == [(0, slice(None))]
    assert level_rows(None, 3) == [(0, slice(None))]


def test_padded_scores_put_each_row_at_its_level_and_pad_with_minus_inf():
    level = torch.tensor([1, 0, 1])
    scores = padded_scores(
        level,
        (2, 3),
        3,
        lambda rows, lvl: torch.full(
            (int(torch.as_tensor(rows).sum()), (2, 3)[lvl]), float(lvl + 1)
        ),
    )
    assert scores.tolist() == [[2.0, 2.0, 2.0], [1.0, 1.0, float("-inf")], [2.0, 2.0, 2.0]]
    one = padded_scores(None, (4,), 2, lambda rows, lvl: torch.ones(2, 4))
    assert one.shape == (2, 4)
