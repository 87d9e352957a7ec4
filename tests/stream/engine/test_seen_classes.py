"""stream/engine/seen_classes.py: the one place predictions are masked to the classes seen."""

from __future__ import annotations

import numpy as np
import torch

from stream.engine.seen_classes import SeenClasses

INF = float("inf")


def test_argmax_is_over_the_seen_classes_only():
    seen = SeenClasses([4])
    seen.mark(0, np.array([1, 3]))
    scores = torch.tensor([[9.0, 1.0, 8.0, 2.0], [0.0, 5.0, 7.0, 6.0]])
    predicted, answered = seen.argmax(scores, 0)
    assert predicted.tolist() == [3, 3] and answered is None


def test_rows_without_a_seen_class_above_minus_inf_are_not_answered():
    seen = SeenClasses([3])
    seen.mark(0, np.array([0]))
    # row 0 scores the seen class 0; row 1 only the unseen class 2 (the learner knows no seen
    # class); row 2 nothing at all
    scores = torch.tensor([[1.0, -INF, 2.0], [-INF, -INF, 3.0], [-INF, -INF, -INF]])
    predicted, answered = seen.argmax(scores, 0)
    assert answered.tolist() == [True, False, False] and predicted[0] == 0


def test_nothing_seen_answers_nothing():
    _, answered = SeenClasses([2]).argmax(torch.ones(2, 2), 0)
    assert answered.tolist() == [False, False]


def test_levels_are_marked_apart_and_all_seen_needs_no_mask():
    seen = SeenClasses([2, 3])
    seen.mark_batch(np.array([1, 2, 0]), np.array([0, 1, 1]))
    assert seen[0].tolist() == [False, True] and seen[1].tolist() == [True, False, True]
    seen.mark(0, np.array([0]))
    predicted, answered = seen.argmax(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 0)
    assert predicted.tolist() == [1] and answered is None


def test_state_round_trips_and_masks_convert():
    seen = SeenClasses([3, 4])
    seen.mark_batch(np.array([2, 3]), np.array([0, 1]))
    restored = SeenClasses([3, 4])
    restored.load_state_dict(seen.state_dict())
    assert seen.state_dict() == [[2], [3]] == restored.state_dict()
    scores = torch.tensor([[5.0, 4.0, 1.0]])
    assert restored.argmax(scores, 0)[0].tolist() == seen.argmax(scores, 0)[0].tolist() == [2]
    converted = SeenClasses.from_masks([torch.tensor([False, False, True]), np.eye(4)[3] > 0])
    assert converted.state_dict() == [[2], [3]] and len(converted) == 2
