"""SLDA (learners/slda.py) equals LDA computed directly on all the data, for any batching."""

from __future__ import annotations

import pytest
import torch

from learners.registry import create
from tests.support.learner_streams import feed, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

SHRINKAGE = 1e-2  # digits pixels include constant ones: Σ alone is singular
TOLERANCE = 1e-8


def direct_lda(x: torch.Tensor, y: torch.Tensor, classes: int = 10):
    """(W, c) of shrunk LDA from the class means and pooled within-class covariance of all data."""
    x = x.reshape(len(x), -1).double()
    means = torch.stack([x[y == k].mean(0) for k in range(classes)])
    centred = x - means[y]
    sigma = centred.T @ centred / len(x)
    A = (1 - SHRINKAGE) * sigma + SHRINKAGE * torch.eye(x.shape[1], dtype=torch.float64)
    W = torch.linalg.solve(A, means.T)
    return W, 0.5 * (means.T * W).sum(0)


@pytest.mark.parametrize("batch", [1, 7, 256])
@pytest.mark.parametrize("order", ["class-sorted", "si-blurry", "random"])
def test_streaming_lda_equals_direct_lda(digits, order, batch):
    rows = digits.orders[order]
    x, y = digits.x[rows], digits.y[rows]
    learner = create("slda", digits.problem, {"shrinkage": SHRINKAGE})
    feed(learner, x, y, batch, prequential=True)
    W, c = learner.discriminant()
    W_direct, c_direct = direct_lda(x, y)
    assert relative_error(W, W_direct) <= TOLERANCE
    assert relative_error(c, c_direct) <= TOLERANCE
    scores = digits.x_test.reshape(len(digits.x_test), -1).double() @ W_direct - c_direct
    predicted = learner.predict(digits.x_test).argmax(1)
    assert torch.equal(predicted, scores.argmax(1))
    assert float((predicted == digits.y_test).double().mean()) > 0.9


def test_merge_of_two_halves_equals_the_whole(digits):
    rows = digits.orders["si-blurry"]
    x, y = digits.x[rows], digits.y[rows]
    whole, first, second = (
        create("slda", digits.problem, {"shrinkage": SHRINKAGE}) for _ in range(3)
    )
    feed(whole, x, y, 7, prequential=False)
    feed(first, x[:700], y[:700], 7, prequential=True)
    feed(second, x[700:], y[700:], 64, prequential=False)
    first.merge(second)
    for mine, theirs in zip(first.discriminant(), whole.discriminant(), strict=True):
        assert relative_error(mine, theirs) <= TOLERANCE
    with pytest.raises(ValueError, match="different configs"):
        first.merge(create("slda", digits.problem, {"shrinkage": 0.5}))


def test_untaught_classes_score_minus_infinity(digits):
    learner = create("slda", digits.problem)
    taught = digits.y < 4
    learner.learn(digits.x[taught], digits.y[taught], torch.zeros_like(digits.y[taught]), 0)
    scores = learner.predict(digits.x_test)
    assert bool(torch.isinf(scores[:, 4:]).all()) and bool(torch.isfinite(scores[:, :4]).all())


def test_each_level_of_a_hierarchy_is_its_own_lda(digits):
    problem, x, y, level = digits.two_levels()
    learner = create("slda", problem, {"shrinkage": SHRINKAGE})
    feed(learner, x, y, 16, prequential=False, level=level)
    for lvl, classes in enumerate((2, 10)):
        mine = level == lvl
        W_direct, c_direct = direct_lda(x[mine], y[mine], classes)
        W, c = learner.discriminant(lvl)
        assert relative_error(W, W_direct) <= TOLERANCE and relative_error(c, c_direct) <= TOLERANCE
