import torch

from learners.base import Problem
from learners.registry import create


def test_unseen_classes_are_masked_in_training_and_prediction():
    problem = Problem(input_shape=(4,), num_classes=(6,))
    er = create(
        "er", problem, {"backbone": {"hidden": [8], "out_dim": 8}, "memory": {"capacity": 10}}
    )
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    er.learn(x, y, torch.zeros(8, dtype=torch.long), iterations=2)
    scores = er.predict(torch.randn(5, 4))
    assert torch.isinf(scores[:, 2:]).all() and torch.isfinite(scores[:, :2]).all()
    # the heads of unseen classes received no gradient
    weight = er.heads[0].weight
    fresh = create(
        "er", problem, {"backbone": {"hidden": [8], "out_dim": 8}, "memory": {"capacity": 10}}
    )
    assert torch.equal(weight[2:], fresh.heads[0].weight[2:])
    assert not torch.equal(weight[:2], fresh.heads[0].weight[:2])


def test_replays_memory_and_fills_it_after_the_step():
    problem = Problem(input_shape=(4,), num_classes=(3,))
    er = create("er", problem, {"memory": {"capacity": 5}, "replay_batch_size": 3})
    assert er.memory_samples == 0
    er.learn(
        torch.randn(4, 4),
        torch.tensor([0, 1, 2, 0]),
        torch.zeros(4, dtype=torch.long),
        iterations=0,
    )
    assert er.memory_samples == 4
    er.learn(
        torch.randn(4, 4),
        torch.tensor([0, 1, 2, 0]),
        torch.zeros(4, dtype=torch.long),
        iterations=1,
    )
    assert er.memory_samples == 5 and er.memory.seen == 8
