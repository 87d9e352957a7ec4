"""Synchronous data-parallel steps (ranks as threads): every step applies the mean gradient of
the ranks stepping, ranks with fewer steps join with zero weight, the parameters stay one."""

from __future__ import annotations

import torch
from torch import nn

from learners import registry
from learners.backbones.backbone import seeded_linear
from learners.base import Problem
from stream.daemon.gradient_sync import GradientSync
from tests.support.threaded_ranks import ThreadedCollectives, ThreadedGroup

LR = 0.1


def model() -> nn.Linear:
    return seeded_linear(3, 1, seed=0)  # ranks are threads: never seed the global RNG in one


def step(net: nn.Linear, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    net(x).pow(2).mean().backward()
    optimizer.step()


def gradient(net: nn.Linear, x: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    net(x).pow(2).mean().backward()
    return [p.grad.clone() for p in net.parameters()]


def test_each_step_applies_the_mean_gradient_of_the_ranks_stepping():
    batches = {0: [torch.ones(2, 3), 2 * torch.ones(2, 3)], 1: [-torch.ones(4, 3)], 2: []}
    group = ThreadedGroup(3)

    def work(rank: int) -> list[torch.Tensor]:
        net = model()
        optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        sync = GradientSync(optimizer, ThreadedCollectives(group, rank))
        for x in batches[rank]:
            step(net, optimizer, x)
        sync.finish_round()
        sync.close()
        return [p.detach().clone() for p in net.parameters()]

    results = group.run(work)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)
    # the same by hand: step 1 averages ranks 0 and 1, step 2 is rank 0's alone
    net = model()
    first = [
        (a + b) / 2
        for a, b in zip(gradient(net, batches[0][0]), gradient(net, batches[1][0]), strict=True)
    ]
    with torch.no_grad():
        for p, g in zip(net.parameters(), first, strict=True):
            p -= LR * g
    second = gradient(net, batches[0][1])
    with torch.no_grad():
        for p, g in zip(net.parameters(), second, strict=True):
            p -= LR * g
    for mine, expected in zip(results[0], net.parameters(), strict=True):
        torch.testing.assert_close(mine, expected.detach(), rtol=1e-6, atol=1e-7)


def test_er_ranks_with_uneven_batches_hold_one_model():
    problem = Problem(input_shape=(6,), num_classes=(3,))
    options = {"backbone": {"hidden": [8], "out_dim": 4}, "memory": {"capacity": 20}}
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 6, generator=generator), torch.randint(0, 3, (30,), generator=generator)
    group = ThreadedGroup(2)

    def work(rank: int):
        learner = registry.create("er", problem, options)
        sync = GradientSync(learner.optimizer, ThreadedCollectives(group, rank))
        rows = range(0, 30, 5) if rank == 0 else range(0, 10, 5)  # rank 1 runs out early
        for start in rows:
            batch = slice(start, start + 5)
            learner.learn(x[batch], y[batch], torch.zeros(5, dtype=torch.long), iterations=2)
        sync.finish_round()
        return learner, sync.steps

    (first, steps0), (second, steps1) = group.run(work)
    assert steps0 == steps1 == 12  # rank 1 joined rank 0's last 8 steps with zero weight
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(first.memory) != len(second.memory)  # each rank keeps its own memory shard
