"""The learner guard: a batch whose learning raises or leaves NaN/inf is undone, exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop
from stream.engine.guard import LearnerGuard, non_finite

PROBLEM = Problem(input_shape=(4,), num_classes=(3,))
POISON = 999.0  # a first feature of this value makes the faulty learner fail


def _batches(count: int, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        x = torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, 4))
        batches.append(Batch(x=x, y=y, level=torch.zeros(4, dtype=torch.long)))
    return batches


def _poisoned(batch: Batch) -> Batch:
    x = batch.x.clone()
    x[1, 0] = POISON
    return Batch(x=x, y=batch.y, level=batch.level)


class Faulty:
    """Wraps nmc's learning (``learn``, and ``predict_then_learn``, which the loop calls):
    raises, or leaves NaN in its sums, on a poisoned sample."""

    def __init__(self, learner, mode: str) -> None:
        self.learner, self.mode, self.calls = learner, mode, 0
        for name in ("learn", "predict_then_learn"):
            setattr(learner, name, self._wrapped(getattr(learner, name)))

    def _wrapped(self, method):
        def call(x, y, level, iterations=1):
            self.calls += 1
            result = method(x, y, level, iterations)  # on a poisoned batch: half-done work
            if (x[:, 0] == POISON).any():
                if self.mode == "raise":
                    raise np.linalg.LinAlgError("Matrix is not positive definite")
                self.learner.sums[0][0, 0] = float("nan")
            return result

        return call


def _loop(mode: str) -> tuple[EventLoop, Faulty]:
    learner = registry.create("nmc", PROBLEM)
    return EventLoop(learner, PROBLEM), Faulty(learner, mode)


def _reference(batches: list[Batch]) -> EventLoop:
    loop = EventLoop(registry.create("nmc", PROBLEM), PROBLEM)
    for batch in batches:
        loop.process(batch)
    return loop


def _assert_same(loop: EventLoop, reference: EventLoop) -> None:
    """The same learner state, bit for bit, and the same loop state."""
    mine_tensors = loop.learner.state_dict().tensors
    their_tensors = reference.learner.state_dict().tensors
    assert mine_tensors.keys() == their_tensors.keys()
    for name, mine in mine_tensors.items():
        torch.testing.assert_close(mine, their_tensors[name], rtol=0, atol=0)
    mine_state, their_state = loop.state_dict(), reference.state_dict()
    mine_state.pop("learn_seconds"), their_state.pop("learn_seconds")
    assert mine_state == their_state


def test_a_batch_whose_learning_raises_is_undone_and_handed_back():
    batches = _batches(6)
    loop, _ = _loop("raise")
    guard: LearnerGuard[int] = LearnerGuard(loop)
    guard.process(batches[0], 0)
    guard.mark_good()
    for i in (1, 2):
        assert guard.process(batches[i], i) == []
    [rejected] = guard.process(_poisoned(batches[3]), 3)
    assert rejected.tag == 3
    assert rejected.problem == "LinAlgError: Matrix is not positive definite"
    for i in (4, 5):
        assert guard.process(batches[i], i) == []
    _assert_same(loop, _reference([b for i, b in enumerate(batches) if i != 3]))


def test_non_finite_state_is_found_at_verify_and_only_the_batch_that_caused_it_is_undone():
    batches = _batches(6, seed=1)
    loop, _ = _loop("nan")
    guard: LearnerGuard[int] = LearnerGuard(loop)
    for i, batch in enumerate(batches):
        assert guard.process(_poisoned(batch) if i == 2 else batch, i) == []
    assert non_finite(loop.learner.state_dict()) is not None
    [rejected] = guard.verify()
    assert rejected.tag == 2 and "holds NaN or inf" in rejected.problem
    assert non_finite(loop.learner.state_dict()) is None
    _assert_same(loop, _reference([b for i, b in enumerate(batches) if i != 2]))
    assert [learned.tag for learned in guard.journal] == [0, 1, 3, 4, 5]
    assert guard.verify() == []


def test_observers_see_each_batch_once_even_when_batches_are_learned_again():
    seen: list[int] = []

    class Counting:
        def on_batch(self, loop, batch, hits, learn_seconds):
            seen.append(len(batch))

        def on_evaluation(self, *args):
            """Not evaluated here."""

    batches = _batches(4, seed=2)
    loop, _ = _loop("raise")
    loop.observers = [Counting()]
    guard: LearnerGuard[int] = LearnerGuard(loop)
    for i, batch in enumerate(batches[:3]):
        guard.process(batch, i)
    assert guard.process(_poisoned(batches[3]), 3) != []
    assert seen == [4, 4, 4]


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"w": torch.tensor([1.0, float("inf")])}, "tensor 'w' holds NaN or inf"),
        ({"w": torch.tensor([float("nan")], dtype=torch.float64)}, "tensor 'w' holds NaN or inf"),
        ({"w": torch.tensor([3e38, 3e38])}, None),  # large but finite: a float64 sum is finite
        # float64 whose sum overflows: finite all the same
        ({"g": torch.tensor([1.7e308, 1.7e308], dtype=torch.float64)}, None),
        (
            {"g": torch.tensor([1.7e308, -float("inf")], dtype=torch.float64)},
            "tensor 'g' holds NaN or inf",
        ),
        ({"z": torch.tensor([1 + 2j, complex("nan")])}, "tensor 'z' holds NaN or inf"),
        ({"z": torch.tensor([1 + 2j])}, None),
        ({"n": torch.tensor([2**62])}, None),
    ],
)
def test_non_finite_names_the_tensor(state, problem):
    from learners.state.learner_state import LearnerState

    assert non_finite(LearnerState(state)) == problem
    assert non_finite(LearnerState({}, {"mean": float("nan")})) == "state metadata holds NaN or inf"


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_joined_labels_are_journaled_with_the_classes_served_and_undone_alone(mode):
    """On the serving path (stream/engine/serving.py) the guard learns joined labels with the
    classes served for them: a later undo learns them again with those same classes, so the
    prequential accuracy scored on what was served survives a rejected batch."""
    from stream.engine.serving import ServingLoop

    loop, _ = _loop(mode)
    guard: LearnerGuard[tuple] = LearnerGuard(loop)
    rejected: list = []

    def guarded(batch, served, origins):
        rejected.extend(guard.process(batch, origins, served))

    serving = ServingLoop(loop, process=guarded)
    reference = ServingLoop(EventLoop(registry.create("nmc", PROBLEM), PROBLEM))
    batches = _batches(6, seed=3)
    bad = _poisoned(batches[4])
    # every request served before any label: the model then knew nothing, and had learned
    # three batches by the time the last label came
    for s in (serving, reference):
        for i, batch in enumerate(batches[:4]):
            s.request(np.arange(4) + 10 * i, batch.x.numpy(), now=float(i))
        for i, batch in enumerate(batches[:4]):
            labels = (batch.y.numpy(), np.zeros(4, dtype=np.int64))
            s.label(np.arange(4) + 10 * i, *labels, now=i + 0.5, origin=(0, i))
            s.flush()
    partition = np.zeros(4, dtype=np.int64)
    serving.learn(bad, origins=(partition, np.full(4, 99)))
    serving.learn(batches[5], origins=(partition, np.full(4, 5)))
    reference.learn(batches[5])
    if mode == "nan":
        assert not rejected
        rejected = guard.verify()
    [refused] = rejected
    assert [column.tolist() for column in refused.tag] == [[0] * 4, [99] * 4]
    assert [[column.tolist() for column in learned.tag] for learned in guard.journal] == [
        [[0] * 4, [offset] * 4] for offset in (0, 1, 2, 3, 5)
    ]
    assert [learned.served is not None for learned in guard.journal] == [True] * 4 + [False]
    _assert_same(loop, reference.loop)


ACIL_PROBLEM = Problem(input_shape=(6,), num_classes=(3,))
ACIL_OPTIONS = {"buffer_size": 24}


def _extreme_batches(count: int, culprit: int, seed: int) -> list[Batch]:
    """acil batches of four samples; batch ``culprit`` holds one sample scaled by 1e12: finite,
    and leaves the ridge statistics no solve can use."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        x = rng.normal(size=(4, 6)).astype(np.float32)
        if i == culprit:
            x[1] *= 1e12
        y = torch.from_numpy(rng.integers(0, 3, 4))
        batches.append(Batch(x=torch.from_numpy(x), y=y, level=torch.zeros(4, dtype=torch.long)))
    return batches


def _acil_loop(batches: Sequence[Batch] = ()) -> EventLoop:
    """An acil loop that has learned ``batches``."""
    loop = EventLoop(registry.create("acil", ACIL_PROBLEM, ACIL_OPTIONS), ACIL_PROBLEM)
    for batch in batches:
        loop.process(batch)
    return loop


def test_a_finite_sample_that_leaves_the_next_solve_failing_is_undone_not_the_next_batch():
    """acil learns a batch with one sample of 1e12 (finite: it passes every finiteness check)
    and then cannot solve its ridge head: the next batch raised "not positive definite". The
    guard rejected that innocent batch, kept the poisoned statistics, and so rejected every
    batch after it too. Now the journal's culprit is undone instead."""
    batches = _extreme_batches(10, culprit=5, seed=4)
    loop = _acil_loop()
    guard: LearnerGuard[int] = LearnerGuard(loop)
    outcomes = [[r.tag for r in guard.process(batch, i)] for i, batch in enumerate(batches)]
    assert outcomes == [[], [], [], [], [], [], [5], [], [], []]
    assert [learned.tag for learned in guard.journal] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    _assert_same(loop, _acil_loop(batches[:5] + batches[6:]))


def test_a_batch_the_learner_cannot_even_predict_is_rejected_alone():
    """The journal is searched only when the learner cannot predict the batch it learned last:
    a batch whose own inputs make every prediction fail must not take the journal with it."""
    batches = _batches(6, seed=7)
    loop, _ = _loop("raise")
    predict = loop.learner.predict

    def failing(x, level=None):
        if (x[:, 0] == POISON).any():
            raise RuntimeError("no prediction for these inputs")
        return predict(x, level)

    loop.learner.predict = failing
    guard: LearnerGuard[int] = LearnerGuard(loop)
    for i in range(3):
        assert guard.process(batches[i], i) == []
    [rejected] = guard.process(_poisoned(batches[3]), 3)
    assert rejected.tag == 3 and [learned.tag for learned in guard.journal] == [0, 1, 2]
    for i in (4, 5):
        assert guard.process(batches[i], i) == []
    _assert_same(loop, _reference([b for i, b in enumerate(batches) if i != 3]))


def test_a_poisoning_batch_right_before_a_checkpoint_is_undone_at_verify():
    """The culprit is the last batch before a checkpoint: the state is finite, so the check
    passed, the poisoned state became the good one, and every batch after it failed against
    it for ever. verify now also checks the learner still predicts the batch learned last."""
    batches = _extreme_batches(8, culprit=4, seed=8)
    loop = _acil_loop()
    guard: LearnerGuard[int] = LearnerGuard(loop)
    for i in range(5):
        assert guard.process(batches[i], i) == []
    assert [r.tag for r in guard.verify()] == [4]
    guard.mark_good()
    for i in range(5, 8):
        assert guard.process(batches[i], i) == []
    _assert_same(loop, _acil_loop(batches[:4] + batches[5:]))
    assert guard.verify() == []
