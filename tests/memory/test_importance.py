"""CLIB's sample-wise importance (memory/importance.py) and its use by the memory."""

from __future__ import annotations

import pytest
import torch

from memory import MemoryConfig, ReplayMemory
from memory.importance import SampleImportance


def test_update_moves_the_replayed_samples_toward_the_unexplained_decrease():
    importance = SampleImportance(slots=4, period=1, decay=0.9)
    importance.update(torch.tensor([2.0, 2.0, 2.0, 2.0]))  # first measurement: nothing to credit
    assert torch.equal(importance.scores, torch.zeros(4))
    importance.scores[:] = torch.tensor([0.0, 0.2, 0.4, 0.0])
    importance.replayed_in_step(torch.tensor([1, 2]))
    assert importance.due()
    importance.update(torch.tensor([1.0, 1.5, 1.5, 2.0]))  # mean decrease 0.5
    # residual = 0.5 - mean(0.2, 0.4) = 0.2; each replayed sample gains 0.1 * 0.2
    assert importance.scores.tolist() == pytest.approx([0.0, 0.22, 0.42, 0.0])
    assert importance.replayed == [] and not importance.due()


def test_a_sample_stored_since_the_last_measurement_is_left_out_of_the_decrease():
    importance = SampleImportance(slots=3, period=1, decay=0.5)
    importance.update(torch.tensor([1.0, 1.0, 1.0]))
    importance.stored(2, peers=torch.tensor([0]), size=3)  # slot 2 now holds a new sample
    importance.replayed_in_step(torch.tensor([0]))
    importance.update(torch.tensor([0.0, 0.0, 50.0]))  # slot 2's loss does not count
    assert importance.scores[0] == pytest.approx(0.5 * 1.0)


def test_new_samples_start_at_their_class_mean_or_the_memory_mean():
    importance = SampleImportance(slots=4, period=1, decay=0.9)
    importance.scores[:3] = torch.tensor([1.0, 3.0, 8.0])
    importance.stored(3, peers=torch.tensor([0, 1]), size=4)
    assert importance.scores[3] == 2.0
    importance.stored(3, peers=torch.tensor([], dtype=torch.long), size=4)
    assert importance.scores[3] == 4.0  # a new class: the mean of the other three


def test_updates_wait_for_the_period():
    importance = SampleImportance(slots=2, period=3, decay=0.9)
    for _ in range(2):
        importance.replayed_in_step(torch.tensor([0]))
    assert not importance.due()
    importance.replayed_in_step(torch.tensor([1]))
    assert importance.due()


class ToyLearner:
    """A model whose memory loss falls by 0.1 for every "good" sample (even id) it replays."""

    def __init__(self) -> None:
        self.progress = 0.0

    def loss(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return torch.full((len(y),), 100.0 - self.progress)

    def train_on(self, ids: torch.Tensor) -> None:
        self.progress += 0.1 * int((ids % 2 == 0).sum())


def test_clib_learns_which_samples_help_and_evicts_one_that_does_not():
    learner = ToyLearner()
    memory = ReplayMemory(MemoryConfig(capacity=20, policy="clib"), seed=0, loss=learner.loss)
    memory.add(
        torch.zeros(20, 1), torch.zeros(20, dtype=torch.long), torch.zeros(20, dtype=torch.long)
    )
    for _ in range(300):
        learner.train_on(memory.sample_batch(4).ids)
    memory.add(
        torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    assert memory.importance is not None
    scores = memory.importance.scores[:20]
    good, bad = scores[memory.ids[:20] % 2 == 0], scores[memory.ids[:20] % 2 == 1]
    assert good.min() > bad.max()
    memory.add(torch.ones(1, 1), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    assert 20 in memory.ids[:20].tolist()  # the newcomer is stored...
    evicted = set(range(20)) - set(memory.ids[:20].tolist())
    assert len(evicted) == 1 and evicted.pop() % 2 == 1  # ...in place of an unhelpful sample
