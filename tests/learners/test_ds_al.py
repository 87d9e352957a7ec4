"""DS-AL (learners/ds_al.py) against a direct re-computation of both streams, batch by batch."""

from __future__ import annotations

import pytest
import torch

from learners.linalg.ridge import one_hot
from learners.registry import create
from tests.support.learner_streams import GAMMA, feed, joint_ridge, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

BUFFER, TOLERANCE = 128, 1e-8


def reference_streams(learner, x, y, batch: int, gamma_comp: float):
    """Main and compensation weights of DS-AL recomputed from scratch: after each batch the main
    stream is the joint ridge of everything so far, and the compensation stream fits its residual
    on the batch with the columns of classes outside the batch cleared."""
    projected = learner.expand(x)
    H_main, H_comp = torch.relu(projected), torch.tanh(projected)
    Y = one_hot(y, 10)
    comp_targets = torch.zeros_like(Y)
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        W_main = joint_ridge(H_main[: start + batch], Y[: start + batch], GAMMA)
        residual = Y[rows] - H_main[rows] @ W_main
        outside = torch.ones(10, dtype=torch.bool)
        outside[y[rows]] = False
        comp_targets[rows] = residual.masked_fill(outside, 0.0)
    return W_main, joint_ridge(H_comp, comp_targets, gamma_comp)


@pytest.mark.parametrize("solver", ["lazy", "woodbury"])
def test_both_streams_equal_their_direct_computation(digits, solver):
    rows = digits.orders["si-blurry"]
    x, y = digits.x[rows], digits.y[rows]
    options = {"buffer_size": BUFFER, "solver": solver, "gamma_comp": 0.5}
    learner = create("ds-al", digits.problem, options)
    feed(learner, x, y, 16, prequential=True)
    W_main, W_comp = reference_streams(learner, x, y, 16, gamma_comp=0.5)
    assert relative_error(learner.main[0].weights(), W_main) <= TOLERANCE
    assert relative_error(learner.comp[0].weights(), W_comp) <= TOLERANCE
    projected = learner.expand(digits.x_test)
    expected = torch.relu(projected) @ W_main + 0.6 * torch.tanh(projected) @ W_comp
    assert torch.equal(learner.predict(digits.x_test).argmax(1), expected.argmax(1))


def test_without_compensation_it_is_g_acil(digits):
    rows = digits.orders["random"]
    x, y = digits.x[rows], digits.y[rows]
    ds_al = create("ds-al", digits.problem, {"buffer_size": BUFFER, "compensation_ratio": 0.0})
    acil = create("acil", digits.problem, {"buffer_size": BUFFER})
    feed(ds_al, x, y, 7, prequential=False)
    feed(acil, x, y, 7, prequential=False)
    assert relative_error(ds_al.main[0].weights(), acil.weights()) <= TOLERANCE
    assert torch.equal(
        ds_al.predict(digits.x_test).argmax(1), acil.predict(digits.x_test).argmax(1)
    )


def test_each_level_of_a_hierarchy_has_its_own_streams(digits):
    problem, x, y, level = digits.two_levels()
    ds_al = create("ds-al", problem, {"buffer_size": BUFFER, "compensation_ratio": 0.0})
    acil = create("acil", problem, {"buffer_size": BUFFER})
    feed(ds_al, x, y, 16, prequential=False, level=level)
    feed(acil, x, y, 16, prequential=False, level=level)
    for lvl in range(2):
        assert relative_error(ds_al.main[lvl].weights(), acil.weights(lvl)) <= TOLERANCE
    assert ds_al.predict(x[:3], level=0).shape == (3, 2)
