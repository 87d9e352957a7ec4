"""Insertion policies (memory/policies.py): bound, reservoir probability, class balance, CLIB."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy import stats

from memory import MemoryConfig, ReplayMemory
from memory.policies import largest_class
from memory.replay_memory import class_key

POLICIES = ["reservoir", "class_balanced", "clib"]


def constant_loss(x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(y))


def make(policy: str, capacity: int, seed: int = 0) -> ReplayMemory:
    config = MemoryConfig(capacity=capacity, policy=policy)
    return ReplayMemory(config, seed=seed, loss=constant_loss)


def imbalanced_stream(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes offered 3, 40, 150, 25 and 1 times, in a random order, on two levels."""
    sizes = {0: 3, 1: 40, 2: 150, 3: 25, 4: 1}
    y = torch.cat([torch.full((n,), c) for c, n in sizes.items()])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    level = (y == 4).long()  # class 4 lives on level 1: a different class from level-0 label 4
    return torch.randn(len(y), 3), y, level


@pytest.mark.parametrize("policy", POLICIES)
def test_capacity_is_never_exceeded(policy):
    memory = make(policy, capacity=30)
    x, y, level = imbalanced_stream(seed=1)
    batch_sizes = torch.randint(1, 20, (200,), generator=torch.Generator().manual_seed(2))
    start = 0
    for size in batch_sizes.tolist():
        if start >= len(y):
            break
        memory.add(x[start : start + size], y[start : start + size], level[start : start + size])
        start += size
        assert len(memory) <= 30
        assert sum(memory.class_counts.values()) == len(memory)
    assert len(memory) == 30
    assert memory.seen == len(y)


@pytest.mark.parametrize("policy", ["class_balanced", "clib"])
def test_class_balance_within_one_sample(policy):
    memory = make(policy, capacity=40)
    x, y, level = imbalanced_stream(seed=3)
    offered: Counter[int] = Counter()
    for i in range(0, len(y), 7):
        memory.add(x[i : i + 7], y[i : i + 7], level[i : i + 7])
        batch = zip(level[i : i + 7].tolist(), y[i : i + 7].tolist(), strict=True)
        offered.update(class_key(lv, c) for lv, c in batch)
        counts = memory.class_counts
        largest = max(counts.values())
        for key, count in counts.items():
            # A class is either kept whole or within one sample of the largest class.
            assert count == offered[key] or count >= largest - 1, (key, count, dict(counts))
    # 3 + 1 samples of the two rarest classes are all kept; 36 slots split over the other three.
    assert memory.class_counts[class_key(0, 0)] == 3
    assert memory.class_counts[class_key(1, 4)] == 1
    assert sorted(memory.class_counts[class_key(0, c)] for c in (1, 2, 3)) == [12, 12, 12]


def test_reservoir_keeps_each_sample_with_probability_capacity_over_seen():
    capacity, seen, runs = 10, 100, 1000
    kept = torch.zeros(seen)
    for seed in range(runs):
        memory = make("reservoir", capacity, seed=seed)
        memory.add(
            torch.zeros(seen, 1),
            torch.zeros(seen, dtype=torch.long),
            torch.zeros(seen, dtype=torch.long),
            ids=torch.arange(seen),
        )
        kept[memory.ids[: len(memory)]] += 1
    expected = runs * capacity / seen
    # Each id: a binomial(runs, capacity/seen) count; 5 standard deviations is a bound that a
    # correct reservoir breaks with probability ~1e-4 over all 100 ids.
    sd = (runs * (capacity / seen) * (1 - capacity / seen)) ** 0.5
    assert (kept - expected).abs().max() < 5 * sd
    # Jointly: the counts are uniform over ids (the early ids are not favoured).
    assert stats.chisquare(kept.numpy()).pvalue > 1e-3
    first_half, second_half = kept[:50].sum(), kept[50:].sum()
    assert abs(first_half - second_half) < 5 * (2 * 50 * sd**2) ** 0.5


def test_reservoir_drops_a_sample_when_the_draw_misses_the_memory():
    memory = make("reservoir", capacity=2)
    memory.add(
        torch.zeros(1000, 1),
        torch.zeros(1000, dtype=torch.long),
        torch.zeros(1000, dtype=torch.long),
    )
    assert len(memory) == 2 and memory.seen == 1000
    # With probability 2/1000 per late sample few of the last 500 can be kept.
    assert (memory.arrival[:2] >= 500).sum() <= 2


def test_largest_class_counts_the_new_sample_and_breaks_ties_low():
    assert largest_class({1: 3, 2: 3}, key=2) == 2  # 2 counts 4 with the new sample
    assert largest_class({1: 3, 2: 3}, key=5) == 1  # a tie goes to the lowest class
    # The new class has nothing stored, so the lowest stored class gives up its sample.
    assert largest_class({1: 1, 2: 1}, key=0) == 1


def test_clib_evicts_the_least_important_sample_of_the_largest_class():
    memory = make("clib", capacity=6)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    memory.add(torch.randn(6, 2), y, torch.zeros(6, dtype=torch.long))
    assert memory.importance is not None
    memory.importance.scores[:6] = torch.tensor([0.5, -0.2, 0.3, -9.0, 1.0, -5.0])
    memory.add(torch.randn(1, 2), torch.tensor([2]), torch.zeros(1, dtype=torch.long))
    # Class 0 is the largest (3); its least important sample is slot 1 (score -0.2), not the
    # globally least important slot 3 of class 1.
    assert memory.y[:6].tolist() == [0, 2, 0, 1, 1, 2]
    assert memory.arrival[1] == 6
    # The newcomer starts at the mean importance of its class's other samples (slot 5: -5.0).
    assert memory.importance.scores[1] == pytest.approx(-5.0)


def test_class_balanced_evicts_uniformly_within_the_largest_class():
    evicted: Counter[int] = Counter()
    for seed in range(300):
        memory = make("class_balanced", capacity=4, seed=seed)
        memory.add(torch.zeros(4, 1), torch.tensor([0, 0, 0, 1]), torch.zeros(4, dtype=torch.long))
        memory.add(torch.zeros(1, 1), torch.tensor([2]), torch.zeros(1, dtype=torch.long))
        (slot,) = torch.nonzero(memory.y[:4] == 2).flatten().tolist()
        evicted[slot] += 1
    assert set(evicted) == {0, 1, 2}  # only class 0's slots, never class 1's slot 3
    assert stats.chisquare(list(evicted.values())).pvalue > 1e-3
