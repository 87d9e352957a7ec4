"""learners/linalg/ridge.py: the inverse solution, the cadence that picks a solution form, and
the deferred Gram update, each against the joint ridge solution computed directly."""

from __future__ import annotations

import copy

import pytest
import torch

from learners.linalg.ridge import (
    FOLD_ROWS,
    GRAM_ROWS,
    Cadence,
    CholeskySolution,
    InverseSolution,
    RecursiveRidge,
    one_hot,
)
from learners.state.learner_state import LearnerState
from tests.support.learner_streams import GAMMA, joint_ridge, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")


def rows(n: int, dim: int = 40, classes: int = 7, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(9))
    H = torch.relu(centres[labels] + 0.5 * torch.randn(n, dim, generator=generator)).double()
    return H, labels, one_hot(labels, classes)


def test_inverse_solution_stays_exact_through_folds_and_refreshes():
    dim, n = 160, 4 * 160 * 2 + 50  # two refreshes of R; frequent: 16 rows <= 160 // 8
    H, labels, Y = rows(n, dim)
    head = RecursiveRidge(dim, Y.shape[1], GAMMA, "auto")
    worst = 0.0
    for start in range(0, n, 16):
        head.fit_labels(H[start : start + 16], labels[start : start + 16])
        end = start + len(H[start : start + 16])
        worst = max(worst, relative_error(head.weights(), joint_ridge(H[:end], Y[:end])))
    assert isinstance(head._solution, InverseSolution)
    assert worst <= 1e-10


def test_inverse_solution_of_statistics_equals_the_ridge_solution():
    H, _, Y = rows(300)
    G, Q = H[:200].T @ H[:200], H[:200].T @ Y[:200]
    solution = InverseSolution.of_statistics(G.clone(), Q, GAMMA, capacity=24)
    R = torch.linalg.inv(G + GAMMA * torch.eye(H.shape[1], dtype=torch.float64))
    assert relative_error(solution.R, R) <= 1e-10
    for start in range(200, 300, 10):  # batches of 10 in a 24-row block: folds of 20 rows
        solution.append(H[start : start + 10], Y[start : start + 10])
        if start == 250:
            solution.weights()  # at most four blocks' rows may wait between two solves
    assert not solution.room(97)
    assert relative_error(solution.weights(), joint_ridge(H, Y)) <= 1e-10
    assert solution.folded == 80 and solution.rows == 20
    # R₀ − ZᵀZ is the inverse of the statistics of every row absorbed
    Z = solution._Z[: solution.rows]
    R_all = torch.linalg.inv(H.T @ H + GAMMA * torch.eye(H.shape[1], dtype=torch.float64))
    assert relative_error(solution.R - Z.T @ Z, R_all) <= 1e-10


def test_inverse_solution_keeps_R_row_major():
    """cholesky_inverse gives a column-major matrix, with which every batch's product R₀Hᵀ ran
    at half speed after each refresh of R from the statistics."""
    H, _, Y = rows(200)
    solution = InverseSolution.of_statistics(H.T @ H, H.T @ Y, GAMMA)
    assert solution.R.stride()[1] == 1


def test_one_hot_targets_add_to_Q_like_the_product():
    H, labels, Y = rows(100)
    by_rows, by_product = (RecursiveRidge(H.shape[1], Y.shape[1], GAMMA, "auto") for _ in "ab")
    by_rows.fit_labels(H, labels)
    by_product.fit(H, Y, labels)
    assert by_rows.Q is not None and by_product.Q is not None
    assert torch.allclose(by_rows.Q, by_product.Q, rtol=1e-14, atol=1e-14)


def test_cadence_turns_rare_at_once_and_frequent_after_two_solves_in_a_row():
    cadence = Cadence(threshold=100)
    assert cadence.frequent  # the event loop predicts every batch
    cadence.learned(16)
    assert not cadence.solved() and cadence.frequent
    assert not cadence.solved()  # nothing learned since: the next chunk of the same evaluation
    cadence.learned(500)
    assert cadence.solved() and not cadence.frequent  # dropping R costs nothing
    cadence.learned(16)
    assert not cadence.solved() and not cadence.frequent  # one short gap is not enough
    cadence.learned(1000)
    assert not cadence.solved()
    cadence.learned(16)
    cadence.solved()
    cadence.learned(16)
    assert cadence.solved() and cadence.frequent


def test_auto_head_solves_by_inverse_when_frequent_and_by_cholesky_when_rare():
    H, labels, Y = rows(900)
    head = RecursiveRidge(H.shape[1], Y.shape[1], GAMMA, "auto")  # threshold 40 // 8 = 5 rows
    for start in range(0, 300, 4):
        head.fit_labels(H[start : start + 4], labels[start : start + 4])
        head.weights()
    assert isinstance(head._solution, InverseSolution)
    for start in range(300, 900, 100):
        head.fit_labels(H[start : start + 100], labels[start : start + 100])
        assert (
            relative_error(head.weights(), joint_ridge(H[: start + 100], Y[: start + 100])) <= 1e-10
        )
    assert isinstance(head._solution, CholeskySolution)


def test_gram_statistics_do_not_depend_on_batch_sizes_or_solves():
    H, labels, _ = rows(2 * GRAM_ROWS + 37)
    heads = [RecursiveRidge(H.shape[1], 7, GAMMA, solver) for solver in ("auto", "lazy")]
    for head, batch in zip(heads, (7, 61), strict=True):
        for start in range(0, len(H), batch):
            head.fit_labels(H[start : start + batch], labels[start : start + batch])
            head.weights()
    grams = [head.gram() for head in heads]
    assert torch.equal(grams[0], grams[1])
    assert relative_error(grams[0], H.T @ H) <= 1e-12
    assert len(heads[0].waiting) == 37  # two blocks applied, the rest waits


def test_saving_changes_nothing_and_the_restored_head_continues_bit_for_bit():
    """The checkpoint holds G as applied so far and the rows whose Gram update waits, so the
    restored head applies the next block at the same row as the saved one."""
    H, labels, Y = rows(3 * FOLD_ROWS)
    head = RecursiveRidge(H.shape[1], 7, GAMMA, "lazy")
    head.fit_labels(H[:100], labels[:100])
    state = head.state_dict()
    assert len(head.waiting) == 100  # saving left the deferred Gram update deferred
    assert torch.equal(state.tensors["waiting"], H[:100])
    statistics = state.tensors["G_applied"] + state.tensors["waiting"].T @ state.tensors["waiting"]
    assert relative_error(statistics, H[:100].T @ H[:100]) <= 1e-12
    restored = RecursiveRidge(H.shape[1], 7, GAMMA, "lazy")
    restored.load_state_dict(state)
    assert torch.equal(head.weights(), restored.weights())
    for start in range(100, len(H), 16):
        for each in (head, restored):
            each.fit_labels(H[start : start + 16], labels[start : start + 16])
        assert torch.equal(restored.weights(), head.weights())
    assert relative_error(head.weights(), joint_ridge(H, Y)) <= 1e-10


def test_a_solution_nobody_solves_is_dropped_instead_of_holding_every_row():
    H, labels, Y = rows(5 * FOLD_ROWS)
    head = RecursiveRidge(H.shape[1], 7, GAMMA)  # starts in the inverse form
    for start in range(0, len(H), 16):
        head.fit_labels(H[start : start + 16], labels[start : start + 16])
    assert head._solution is None
    assert relative_error(head.weights(), joint_ridge(H, Y)) <= 1e-10


def _saved_head(solver: str = "auto") -> tuple[RecursiveRidge, LearnerState]:
    H, labels, _ = rows(150)
    head = RecursiveRidge(H.shape[1], 7, GAMMA, solver)
    for start in range(0, 150, 4):  # predicted every 4 rows: the inverse solution (auto)
        head.fit_labels(H[start : start + 4], labels[start : start + 4])
        head.weights()
    head.fit_labels(H[:3], labels[:3])  # rows waiting in the cached solution
    return head, head.state_dict()


@pytest.mark.parametrize("solver", ["auto", "lazy"])
def test_a_new_checkpoint_has_no_g_an_older_build_would_solve_without_the_waiting_rows(solver):
    """An older streamcl takes "G" as every row's Gram matrix; the applied part alone, under that
    name, loaded there silently wrong (weights 48% off). Under its own name it is refused."""
    _, state = _saved_head(solver)
    assert "G" not in state.tensors and "G_applied" in state.tensors and "waiting" in state.tensors


@pytest.mark.parametrize("solver", ["auto", "lazy"])
def test_a_checkpoint_from_before_the_cache_was_saved_loads_to_rounding(solver):
    """No cadence, waiting rows or solution (G then held every row): the head solves afresh."""
    head, state = _saved_head(solver)
    G = state.tensors["G_applied"] + state.tensors["waiting"].T @ state.tensors["waiting"]
    old = LearnerState({"counts": state.tensors["counts"], "G": G, "Q": state.tensors["Q"]})
    restored = RecursiveRidge(head.dim, 7, GAMMA, solver)
    restored.load_state_dict(old)
    assert relative_error(restored.weights(), head.weights()) <= 1e-12


@pytest.mark.parametrize(
    "damage",
    [
        lambda t, m: t.update({"solution.R": t["solution.R"].float()}),
        lambda t, m: t.update({"solution.W": t["solution.W"] * float("nan")}),
        lambda t, m: t.update({"waiting": t["waiting"] * float("inf")}),
        lambda t, m: m.update(waiting=GRAM_ROWS),
        lambda t, m: m.update(fresh=1),
        lambda t, m: m["cadence"].update(rows=-1),
        lambda t, m: m["cadence"].update(streak=2),
        lambda t, m: m["solution"].update(rows=FOLD_ROWS + 1),
        lambda t, m: m["solution"].update(folded=1.5),
        lambda t, m: m["solution"].update(pending=[2, 2]),
        lambda t, m: m["solution"].update(kind="qr"),
        # finite but no inverse of G + γI: served, then a breakdown asking to raise gamma
        lambda t, m: t.update({"solution.R": t["solution.R"].tril(-1)}),
    ],
)
def test_a_damaged_cache_in_a_checkpoint_is_refused_and_leaves_the_head_alone(damage):
    head, state = _saved_head()
    tensors, meta = dict(state.tensors), copy.deepcopy(state.meta)
    damage(tensors, meta)
    fresh = RecursiveRidge(head.dim, 7, GAMMA)
    before = fresh.state_dict()
    with pytest.raises((ValueError, KeyError)):
        fresh.load_state_dict(LearnerState(tensors, meta))
    after = fresh.state_dict()
    assert after.meta == before.meta
    assert all(torch.equal(before.tensors[k], v) for k, v in after.tensors.items())


def test_a_cholesky_factor_without_a_positive_diagonal_is_refused():
    head, state = _saved_head("lazy")
    tensors = dict(state.tensors)
    assert "solution.factor" in tensors
    tensors["solution.factor"] = tensors["solution.factor"].clone().fill_diagonal_(0.0)
    with pytest.raises(ValueError, match="factor: its diagonal is not positive"):
        RecursiveRidge(head.dim, 7, GAMMA, "lazy").load_state_dict(
            LearnerState(tensors, state.meta)
        )
