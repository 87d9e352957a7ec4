import torch

from memory.reservoir import ReservoirMemory


def test_fills_then_keeps_the_capacity():
    memory = ReservoirMemory(capacity=10, seed=0)
    for start in range(0, 100, 7):
        y = torch.arange(start, min(start + 7, 100))
        memory.add(y[:, None].float(), y, torch.zeros_like(y))
        assert len(memory) == min(10, memory.seen) and len(memory) <= 10
    assert memory.seen == 100
    x, y, _ = memory.sample(4)
    assert len(set(y.tolist())) == 4 and torch.equal(x[:, 0].long(), y)


def test_batched_insertion_equals_one_at_a_time():
    a, b = ReservoirMemory(8, seed=3), ReservoirMemory(8, seed=3)
    y = torch.arange(50)
    a.add(y[:, None].float(), y, torch.zeros_like(y))
    for i in range(50):
        b.add(y[i : i + 1, None].float(), y[i : i + 1], torch.zeros(1, dtype=torch.long))
    assert torch.equal(a.y[: len(a)], b.y[: len(b)]) and torch.equal(a.x[: len(a)], b.x[: len(b)])


def test_state_round_trip_continues_identically():
    a = ReservoirMemory(6, seed=1)
    y = torch.arange(20)
    a.add(y[:, None].float(), y, torch.zeros_like(y))
    b = ReservoirMemory(6, seed=99)
    b.load_state_dict(a.state_dict())
    more = torch.arange(20, 40)
    a.add(more[:, None].float(), more, torch.zeros_like(more))
    b.add(more[:, None].float(), more, torch.zeros_like(more))
    assert torch.equal(a.y, b.y) and torch.equal(a.sample(3)[1], b.sample(3)[1])
