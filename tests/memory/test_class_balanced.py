from collections import Counter

import pytest
import torch

from learners.state_io import state_from_bytes, state_to_bytes
from memory import ClassBalancedMemory, MemoryConfig, build_memory


def batch(labels, level=0, start=0):
    y = torch.tensor(labels)
    x = torch.arange(start, start + len(y), dtype=torch.float32)[:, None]
    return x, y, torch.full_like(y, level)


def held(memory):
    n = len(memory)
    return Counter(zip(memory.level[:n].tolist(), memory.y[:n].tolist(), strict=True))


def test_a_new_class_enters_a_full_memory_at_the_expense_of_the_largest():
    memory = ClassBalancedMemory(10, seed=0)
    memory.add(*batch([0] * 7 + [1] * 3))
    memory.add(*batch([2]))
    assert held(memory) == {(0, 0): 6, (0, 1): 3, (0, 2): 1}
    memory.add(*batch([2] * 5))
    assert held(memory) == {(0, 0): 3, (0, 1): 3, (0, 2): 4}


def test_long_imbalanced_streams_end_balanced_and_levels_are_separate_classes():
    memory = ClassBalancedMemory(12, seed=1)
    memory.add(*batch([5] * 200))
    memory.add(*batch([5] * 30, level=1))
    memory.add(*batch([7] * 30, level=1))
    assert held(memory) == {(0, 5): 4, (1, 5): 4, (1, 7): 4}
    assert memory.seen == 260


def test_ties_evict_the_class_that_arrived_first():
    memory = ClassBalancedMemory(4, seed=2)
    memory.add(*batch([3, 3, 1, 1]))
    memory.add(*batch([9]))
    assert held(memory) == {(0, 3): 1, (0, 1): 2, (0, 9): 1}


def test_stored_inputs_follow_their_labels():
    memory = ClassBalancedMemory(6, seed=3)
    memory.add(*batch([0, 1, 2] * 10))
    x, y, _ = memory.sample(6)
    # Inputs were their stream positions, and position i had label i % 3.
    assert torch.equal(x[:, 0].long() % 3, y)


def test_checkpoint_round_trip_continues_identically():
    memory = ClassBalancedMemory(8, seed=4)
    memory.add(*batch([0] * 5 + [1] * 5))
    restored = ClassBalancedMemory(8, seed=99)
    restored.load_state_dict(state_from_bytes(state_to_bytes(memory.state_dict())))
    for m in (memory, restored):
        m.add(*batch([2] * 3 + [1] * 2, start=100))
    assert torch.equal(memory.sample(8)[0], restored.sample(8)[0])
    assert held(memory) == held(restored)


def test_config_picks_the_policy_and_capacity_is_checked():
    built = build_memory(MemoryConfig(policy="class-balanced"), seed=0)
    assert isinstance(built, ClassBalancedMemory)
    memory = ClassBalancedMemory(4)
    with pytest.raises(ValueError, match="capacity 4"):
        ClassBalancedMemory(5).load_state_dict(memory.state_dict())
    with pytest.raises(ValueError, match="empty"):
        memory.sample(1)
