"""G-ACIL (learners/acil.py) is exact: the streaming head equals the joint ridge solution.

Streams are the digits training split in three orders (class-sorted, Si-Blurry, random) fed in
batches of 1, 7 and 256; the reference is W = (HᵀH + γI)⁻¹HᵀY computed directly in float64 on
the same buffer features.
"""

from __future__ import annotations

import pytest
import torch

from learners.acil import ACIL
from learners.analytic import DEFAULT_WIDTH, default_width
from learners.linalg.ridge import one_hot
from learners.registry import create
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from tests.support.learner_streams import feed, joint_ridge, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

BUFFER = 128
TOLERANCE = 1e-8


def reference(learner, x, y, classes: int = 10) -> torch.Tensor:
    H = learner.expand(x)
    return joint_ridge(H, one_hot(y, classes))


@pytest.mark.parametrize("batch", [1, 7, 256])
@pytest.mark.parametrize("order", ["class-sorted", "si-blurry", "random"])
@pytest.mark.parametrize("prequential", [True, False], ids=["predicting", "learning-only"])
def test_weights_equal_joint_ridge_for_any_order_and_batch(digits, order, batch, prequential):
    rows = digits.orders[order]
    x, y = digits.x[rows], digits.y[rows]
    learner = create("acil", digits.problem, {"buffer_size": BUFFER})
    feed(learner, x, y, batch, prequential)
    expected = reference(learner, x, y)
    assert relative_error(learner.weights(), expected) <= TOLERANCE
    predicted = learner.predict(digits.x_test).argmax(1)
    assert torch.equal(predicted, (learner.expand(digits.x_test) @ expected).argmax(1))


def test_woodbury_solver_equals_joint_ridge_and_lazy(digits):
    rows = digits.orders["si-blurry"]
    x, y = digits.x[rows], digits.y[rows]
    lazy = create("acil", digits.problem, {"buffer_size": BUFFER})
    woodbury = create("acil", digits.problem, {"buffer_size": BUFFER, "solver": "woodbury"})
    feed(lazy, x, y, 16, prequential=True)
    feed(woodbury, x, y, 16, prequential=True)
    assert relative_error(woodbury.weights(), reference(woodbury, x, y)) <= TOLERANCE
    assert torch.equal(
        lazy.predict(digits.x_test).argmax(1), woodbury.predict(digits.x_test).argmax(1)
    )


def test_merge_of_two_halves_equals_the_whole(digits):
    rows = digits.orders["si-blurry"]
    x, y = digits.x[rows], digits.y[rows]
    half = len(y) // 2
    whole = create("acil", digits.problem, {"buffer_size": BUFFER})
    first = create("acil", digits.problem, {"buffer_size": BUFFER})
    second = create("acil", digits.problem, {"buffer_size": BUFFER})
    feed(whole, x, y, 7, prequential=True)
    feed(first, x[:half], y[:half], 7, prequential=True)
    feed(second, x[half:], y[half:], 256, prequential=False)
    first.merge(second)
    assert relative_error(first.weights(), reference(whole, x, y)) <= TOLERANCE
    assert relative_error(first.weights(), whole.weights()) <= TOLERANCE
    assert torch.equal(
        first.predict(digits.x_test).argmax(1), whole.predict(digits.x_test).argmax(1)
    )
    assert torch.equal(first.heads[0].counts, whole.heads[0].counts)


def test_merge_refuses_learners_that_cannot_add_up(digits):
    learner = create("acil", digits.problem, {"buffer_size": BUFFER})
    with pytest.raises(ValueError, match="different configs"):
        learner.merge(create("acil", digits.problem, {"buffer_size": BUFFER, "seed": 1}))
    with pytest.raises(ValueError, match="different configs"):
        learner.merge(create("acil", digits.problem, {"buffer_size": BUFFER, "solver": "woodbury"}))
    with pytest.raises(ValueError, match="cannot merge"):
        learner.merge(create("aef-ocl", digits.problem, {"buffer_size": BUFFER}))
    woodbury = create("acil", digits.problem, {"buffer_size": BUFFER, "solver": "woodbury"})
    with pytest.raises(ValueError, match="woodbury keeps none"):
        woodbury.merge(
            create("acil", digits.problem, {"buffer_size": BUFFER, "solver": "woodbury"})
        )


def assert_restored(scores: torch.Tensor, restored: torch.Tensor) -> None:
    """The same scores, bit for bit: the checkpoint carries the cached solution, its cadence and
    the rows whose Gram update waits, so the restored head solves with the same arithmetic."""
    assert ACIL.restore_tolerance == 0.0
    assert torch.equal(scores, restored)


@pytest.mark.parametrize("solver", ["auto", "lazy", "woodbury"])
def test_checkpoint_round_trip_predicts_identically(digits, solver):
    rows = digits.orders["random"]
    x, y = digits.x[rows], digits.y[rows]
    options = {"buffer_size": BUFFER, "solver": solver}
    learner = create("acil", digits.problem, options)
    feed(learner, x[:700], y[:700], 7, prequential=True)  # leaves rows appended to a cached solve
    restored = create("acil", digits.problem, options)
    restored.load_state_dict(state_from_bytes(state_to_bytes(learner.state_dict())))
    assert_restored(learner.predict(digits.x_test), restored.predict(digits.x_test))
    feed(learner, x[700:], y[700:], 7, prequential=True)
    feed(restored, x[700:], y[700:], 7, prequential=True)
    assert_restored(learner.predict(digits.x_test), restored.predict(digits.x_test))
    other = "woodbury" if solver != "woodbury" else "lazy"
    with pytest.raises(ValueError, match="solver"):
        create("acil", digits.problem, {**options, "solver": other}).load_state_dict(
            learner.state_dict()
        )


def test_each_level_of_a_hierarchy_is_its_own_joint_ridge(digits):
    problem, x, y, level = digits.two_levels()
    learner = create("acil", problem, {"buffer_size": BUFFER})
    feed(learner, x, y, 16, prequential=False, level=level)
    for lvl, classes in enumerate((2, 10)):
        mine = level == lvl
        expected = reference(learner, x[mine], y[mine], classes)
        assert relative_error(learner.weights(lvl), expected) <= TOLERANCE
    assert learner.predict(digits.x_test[:5], level=0).shape == (5, 2)


def test_untaught_classes_score_minus_infinity_and_iterations_are_ignored(digits):
    taught = digits.y < 3
    x, y = digits.x[taught], digits.y[taught]
    once = create("acil", digits.problem, {"buffer_size": BUFFER})
    never = create("acil", digits.problem, {"buffer_size": BUFFER})
    once.learn(x, y, torch.zeros_like(y), iterations=1)
    never.learn(x, y, torch.zeros_like(y), iterations=0)
    scores = once.predict(digits.x_test)
    assert bool(torch.isinf(scores[:, 3:]).all()) and bool(torch.isfinite(scores[:, :3]).all())
    assert torch.equal(once.weights(), never.weights())


def test_default_solver_predicts_like_woodbury_at_the_default_width(digits):
    """The loop's pattern (predict each batch of 16, then learn it) at the CPU default width:
    the default solver and the recursive form make the same predictions, batch after batch."""
    rows = digits.orders["si-blurry"][:800]
    x, y = digits.x[rows], digits.y[rows]
    learners = [create("acil", digits.problem, {"solver": s}) for s in ("auto", "woodbury")]
    assert [learner.width for learner in learners] == [DEFAULT_WIDTH["cpu"]] * 2
    predicted: list[list[torch.Tensor]] = [[], []]
    for start in range(0, len(y), 16):
        for learner, out in zip(learners, predicted, strict=True):
            out.append(learner.predict(x[start : start + 16]).argmax(1))
            learner.learn(x[start : start + 16], y[start : start + 16], torch.zeros(16).long())
    assert torch.equal(torch.cat(predicted[0]), torch.cat(predicted[1]))
    assert torch.equal(
        learners[0].predict(digits.x_test).argmax(1), learners[1].predict(digits.x_test).argmax(1)
    )
    assert relative_error(learners[0].weights(), reference(learners[0], x, y)) <= TOLERANCE


def test_width_follows_the_device_unless_configured(digits):
    assert default_width(torch.device("cpu")) == 1024
    assert default_width(torch.device("cuda")) == 8192
    assert create("acil", digits.problem, {"buffer_size": 96}).width == 96


def test_a_checkpoint_sets_the_width_of_a_learner_left_to_its_device(digits):
    rows = digits.orders["random"][:300]
    saved = create("acil", digits.problem, {"buffer_size": 96})
    saved.learn(digits.x[rows], digits.y[rows], torch.zeros(300).long())
    state = state_from_bytes(state_to_bytes(saved.state_dict()))
    restored = create("acil", digits.problem)  # width by device, nothing learned yet
    restored.load_state_dict(state)
    assert restored.width == 96
    assert torch.equal(restored.predict(digits.x_test), saved.predict(digits.x_test))
    with pytest.raises(ValueError, match="buffer width 128 cannot become 96"):
        create("acil", digits.problem, {"buffer_size": 128}).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("solver", ["auto", "lazy", "woodbury"])
def test_cuda_head_equals_the_cpu_one(digits, solver):
    rows = digits.orders["si-blurry"]
    x, y = digits.x[rows], digits.y[rows]
    options = {"buffer_size": 1024, "solver": solver}
    cpu = create("acil", digits.problem, options)
    cuda = create("acil", digits.problem, options, device="cuda")
    assert cuda.heads[0].counts.device.type == "cuda"
    feed(cpu, x, y, 16, prequential=True)
    feed(cuda, x, y, 16, prequential=True)
    assert relative_error(cuda.weights().cpu(), cpu.weights()) <= 1e-8
    assert relative_error(cuda.heads[0].gram().cpu(), cpu.heads[0].gram()) <= 1e-8


def test_every_solver_with_statistics_can_merge(digits):
    for solver, mergeable in (("auto", True), ("lazy", True), ("woodbury", False)):
        learner = create("acil", digits.problem, {"buffer_size": 64, "solver": solver})
        assert learner.can_merge is mergeable, solver
    assert create("acil", digits.problem).can_merge  # the default config
