"""The ridge machinery of learners/analytic.py: buffer, lazy Cholesky solution, Woodbury form."""

from __future__ import annotations

import pytest
import torch

from learners import registry
from learners.analytic import RandomBuffer
from learners.base import Problem
from learners.linalg.ridge import (
    CholeskySolution,
    RecursiveRidge,
    RidgeBreakdown,
    WoodburySolution,
    one_hot,
)
from learners.registry import LearnerConfigError
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from tests.support.learner_streams import GAMMA, joint_ridge, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")


def rows(n: int, dim: int = 48, classes: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    buffer = RandomBuffer(12, dim, seed=seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, 12, generator=torch.Generator().manual_seed(5))
    H = buffer(centres[labels] + 0.3 * torch.randn(n, 12, generator=generator))
    return H, labels, one_hot(labels, classes)


def test_buffer_is_seeded_and_sized_like_linear_init():
    a, b, c = (
        RandomBuffer(10, 32, seed=3),
        RandomBuffer(10, 32, seed=3),
        RandomBuffer(10, 32, seed=4),
    )
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert a.weight.dtype == torch.float64 and a.weight.abs().max() <= 1 / 10**0.5
    x = torch.randn(5, 10)
    assert bool((a(x) >= 0).all())
    identity = RandomBuffer(10, 32, seed=3, activation="identity")
    assert torch.allclose(identity(x), x.double() @ a.weight)


@pytest.mark.parametrize("solver", ["lazy", "woodbury"])
def test_head_equals_joint_ridge(solver):
    H, labels, Y = rows(300)
    head = RecursiveRidge(H.shape[1], Y.shape[1], GAMMA, solver)
    for start in range(0, 300, 13):
        head.fit_labels(H[start : start + 13], labels[start : start + 13])
        if start % 39 == 0:
            head.weights()  # solves between batches take the appended-rows path
    assert relative_error(head.weights(), joint_ridge(H, Y)) <= 1e-10
    assert head.counts.tolist() == torch.bincount(labels, minlength=6).double().tolist()


def test_appended_rows_equal_a_new_factorisation():
    H, _, Y = rows(200)
    G, Q = H[:120].T @ H[:120], H[:120].T @ Y[:120]
    solution = CholeskySolution(G, Q, GAMMA, capacity=80)
    for start in range(120, 200, 20):
        assert solution.room(20)
        solution.append(H[start : start + 20], Y[start : start + 20])
        if start == 140:
            solution.weights()  # at most capacity/2 rows may wait between two solves
    assert not solution.room(1)
    with pytest.raises(ValueError, match="full"):
        solution.append(H[:1], Y[:1])
    assert relative_error(solution.weights(), joint_ridge(H, Y)) <= 1e-10


def test_a_full_solution_is_dropped_and_refactorised():
    H, labels, Y = rows(400, dim=32)
    head = RecursiveRidge(32, 6, GAMMA)  # capacity 8 rows: most batches overflow it
    for start in range(0, 400, 5):
        head.fit_labels(H[start : start + 5], labels[start : start + 5])
        head.weights()
    assert relative_error(head.weights(), joint_ridge(H, Y)) <= 1e-10


def test_woodbury_form_matches_its_definition():
    H, _, Y = rows(60)
    solution = WoodburySolution.fresh(H.shape[1], Y.shape[1], GAMMA, torch.device("cpu"))
    solution.append(H[:30], Y[:30])
    solution.append(H[30:], Y[30:])
    R = torch.linalg.inv(H.T @ H + GAMMA * torch.eye(H.shape[1], dtype=torch.float64))
    assert relative_error(solution.R, R) <= 1e-10
    assert relative_error(solution.weights(), joint_ridge(H, Y)) <= 1e-10


@pytest.mark.parametrize("solver", ["lazy", "woodbury"])
def test_augmented_solution_leaves_the_head_alone(solver):
    H, labels, Y = rows(150)
    head = RecursiveRidge(H.shape[1], 6, GAMMA, solver)
    head.fit_labels(H[:100], labels[:100])
    weights_before = head.weights().clone()
    before = {k: v.clone() for k, v in head.state_dict().tensors.items()}
    augmented = head.augmented([(H[100:], Y[100:])])
    assert relative_error(augmented.weights(), joint_ridge(H, Y)) <= 1e-10
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().tensors.items())
    assert torch.equal(head.weights(), weights_before)


def test_merge_adds_statistics_and_refuses_woodbury():
    H, labels, Y = rows(200)
    left, right = RecursiveRidge(48, 6, GAMMA), RecursiveRidge(48, 6, GAMMA)
    left.fit_labels(H[:90], labels[:90])
    left.weights()
    right.fit_labels(H[90:], labels[90:])
    left.merge(right)
    assert relative_error(left.weights(), joint_ridge(H, Y)) <= 1e-10
    with pytest.raises(ValueError, match="woodbury keeps none"):
        left.merge(RecursiveRidge(48, 6, GAMMA, "woodbury"))
    with pytest.raises(ValueError, match="gamma"):
        left.merge(RecursiveRidge(48, 6, 1.0))


@pytest.mark.parametrize("solver", ["lazy", "woodbury"])
def test_state_round_trip(solver):
    H, labels, _ = rows(100)
    head = RecursiveRidge(48, 6, GAMMA, solver)
    head.fit_labels(H, labels)
    restored = RecursiveRidge(48, 6, GAMMA, solver)
    saved = head.state_dict()
    restored.load_state_dict(saved)
    again = restored.state_dict()
    assert again.meta == saved.meta and saved.tensors.keys() == again.tensors.keys()
    assert all(torch.equal(saved.tensors[k], v) for k, v in again.tensors.items())
    head.drop_cache()
    assert torch.equal(head.weights(), restored.weights())
    other = "woodbury" if solver == "lazy" else "lazy"
    with pytest.raises(KeyError, match="solver"):
        RecursiveRidge(48, 6, GAMMA, other).load_state_dict(head.state_dict())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_give_one_clear_error(bad):
    head = RecursiveRidge(4, 2, GAMMA)
    head.fit_labels(torch.full((2, 4), bad, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ridge statistics are not positive definite"):
        head.weights()


@pytest.mark.parametrize("solver", ["auto", "lazy", "woodbury"])
def test_a_gamma_too_small_for_the_features_is_one_error_that_says_raise_gamma(solver):
    """γ = 1e-300 on digits ended replay with ``failed: ValueError`` (auto) or torch's
    ``_LinAlgError`` naming a leading minor (woodbury), exit 1. Every solver now raises
    :class:`RidgeBreakdown` (a user error, exit 2), before the batch changes its solution."""
    H, labels, _ = rows(64)
    head = RecursiveRidge(48, 6, 1e-300, solver)
    before = head.weights().clone()
    with pytest.raises(RidgeBreakdown, match=r"gamma is too small .* raise gamma"):
        for at in range(0, 64, 8):
            head.fit_labels(H[at : at + 8], labels[at : at + 8])
            head.weights()
            before = head.weights().clone()
    if solver == "woodbury":  # its solution is the state: the failing batch left it alone
        assert torch.equal(head.weights(), before)


def test_head_wider_than_a_block_equals_joint_ridge():
    """d = 600 spans two 512-row blocks of the lower-triangle Gram update and three 256-row
    blocks of the blocked Cholesky (the last one partial), as d = 2048 or 8192 spans several."""
    H, labels, Y = rows(500, dim=600)
    left, right = RecursiveRidge(600, 6, GAMMA), RecursiveRidge(600, 6, GAMMA)
    for start in range(0, 260, 37):
        left.fit_labels(H[start : min(start + 37, 260)], labels[start : min(start + 37, 260)])
        left.weights()  # every batch predicted: appended rows, then a new factorisation
    right.fit_labels(H[260:], labels[260:])
    assert relative_error(right.weights(), joint_ridge(H[260:], Y[260:])) <= 1e-10
    left.merge(right)
    assert relative_error(left.weights(), joint_ridge(H, Y)) <= 1e-10
    assert relative_error(left.gram(), H.T @ H) <= 1e-14
    assert torch.equal(left.gram(), left.gram().mT)
    restored = RecursiveRidge(600, 6, GAMMA)
    restored.load_state_dict(left.state_dict())
    left.drop_cache()
    assert torch.equal(restored.weights(), left.weights())
    augmented = restored.augmented([(H[:50], Y[:50])])
    expected = joint_ridge(torch.cat([H, H[:50]]), torch.cat([Y, Y[:50]]))
    assert relative_error(augmented.weights(), expected) <= 1e-10
    assert torch.equal(restored.weights(), left.weights())


@pytest.mark.parametrize("name, heads", [("acil", 1), ("aef-ocl", 1), ("ds-al", 2)])
def test_a_buffer_too_wide_for_the_device_is_a_config_error(monkeypatch, name, heads):
    """Ridge heads are allocated when the learner is built: a buffer_size with a digit too many
    used to fail with an allocator error, or get the process killed for memory."""
    monkeypatch.setattr("learners.analytic.memory_bytes", lambda device: (1 << 30) - 1)
    problem = Problem(input_shape=(8,), num_classes=(3,))
    # a machine just under 1 GiB: two float64 matrices of 4096² (256 MiB) fit, of 8192² do not
    registry.create(name, problem, {"buffer_size": 4096 // heads})
    with pytest.raises(LearnerConfigError, match=rf"width of 8,192 gives {heads} ridge head"):
        registry.create(name, problem, {"buffer_size": 8192})


def _resume_stream(n: int = 700):
    """Inputs, labels and batch sizes of a stream whose predictions are frequent, then rare,
    then frequent again, so that an ``auto`` head switches its solution form both ways."""
    generator = torch.Generator().manual_seed(21)
    labels = torch.randint(0, 6, (n,), generator=generator)
    centres = torch.randn(6, 12, generator=torch.Generator().manual_seed(22))
    x = (centres[labels] + 0.4 * torch.randn(n, 12, generator=generator)).float()
    sizes, total = [], 0
    while total < n:
        sizes.append(min((5, 7, 3)[len(sizes) % 3], n - total))
        total += sizes[-1]
    return x, labels, sizes


def _run(learner, x, y, sizes, first: int, snapshots: dict[int, bytes] | None = None):
    """Learn batches ``first``… of the stream, predicting each first where the schedule says;
    the scores, and a checkpoint before each batch named in ``snapshots``."""
    scores = []
    start = sum(sizes[:first])
    for index in range(first, len(sizes)):
        if snapshots is not None and index in snapshots:
            snapshots[index] = state_to_bytes(learner.state_dict())
        rows = slice(start, start + sizes[index])
        start += sizes[index]
        level = torch.zeros(sizes[index], dtype=torch.long)
        if index < 40 or index >= 80 or index % 4 == 0:  # frequent, rare, frequent
            scores.append(learner.predict_then_learn(x[rows], y[rows], level))
        else:
            learner.learn(x[rows], y[rows], level)
    return scores


@pytest.mark.parametrize("solver", ["auto", "lazy", "woodbury"])
@pytest.mark.parametrize("name", ["acil", "aef-ocl", "ds-al"])
def test_a_learner_restored_at_any_batch_goes_on_bit_for_bit(name, solver):
    """The checkpoint carries every head's cached solution, its cadence and the rows whose Gram
    update waits (and AEF-OCL's balanced solution), so a learner restored from it predicts and
    learns with the same operations on the same operands as one that never stopped: every
    score and every tensor of its state equal, not close. Restored before the first Gram block
    is applied, between cached-solution refreshes, across the frequent→rare→frequent cadence
    switches, and after ``GRAM_ROWS`` rows."""
    problem = Problem(input_shape=(12,), num_classes=(6,))
    options = {"buffer_size": 64, "solver": solver}
    if name == "aef-ocl":
        options["refresh_every"] = 150
    x, y, sizes = _resume_stream()
    whole = registry.create(name, problem, options)
    snapshots: dict[int, bytes] = dict.fromkeys((3, 29, 47, 62, 81, 103, 131), b"")
    expected = _run(whole, x, y, sizes, 0, snapshots)
    test_x = x[::7] + 0.1
    final = state_from_bytes(state_to_bytes(whole.state_dict()))  # not views of live tensors
    for index, data in snapshots.items():
        resumed = registry.create(name, problem, options)
        resumed.load_state_dict(state_from_bytes(data))
        scores = _run(resumed, x, y, sizes, index)
        here = f"{name} {solver} restored before batch {index}"
        for got, want in zip(scores, expected[len(expected) - len(scores) :], strict=True):
            assert torch.equal(got, want), here
        state = resumed.state_dict()
        assert state.tensors.keys() == final.tensors.keys() and state.meta == final.meta, here
        for key, tensor in final.tensors.items():
            assert torch.equal(state.tensors[key], tensor), f"{here}: {key}"
        assert torch.equal(resumed.predict(test_x), whole.predict(test_x)), here
