"""UER: angle-only loss on the stream batch, dot-product loss on replay and at inference."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from learners.base import Problem
from learners.registry import create
from learners.uer import UER

PROBLEM = Problem(input_shape=(6,), num_classes=(4,))
SMALL = {"backbone": {"hidden": [8], "out_dim": 5}, "memory": {"capacity": 20}}


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    return torch.randn(n, 6, generator=g) + y.unsqueeze(1), y, torch.zeros(n, dtype=torch.long)


def uer(**options) -> UER:
    learner = create("uer", PROBLEM, {**SMALL, **options})
    assert isinstance(learner, UER)
    learner.seen[0][:] = True
    return learner


def test_defaults_are_the_documented_ones():
    config = create("uer", PROBLEM).config
    assert abs(config.scale - 1 / 0.09) < 1e-12
    assert config.replay_batch_size is None  # = the stream batch size
    assert config.memory.policy == "reservoir" and config.memory.capacity == 500


def test_logits_factor_into_norms_and_angle():
    learner = uer()
    x, _, _ = batch()
    features = learner.backbone(x)
    w = learner.weights[0]
    norms = features.norm(dim=1, keepdim=True) * w.norm(dim=1)
    cosine = learner.cosine_logits(features, 0) / learner.config.scale
    torch.testing.assert_close(learner.dot_logits(features, 0), norms * cosine)
    torch.testing.assert_close(learner.predict(x), learner.dot_logits(features, 0))


def test_stream_loss_never_moves_weight_norms_but_replay_loss_does():
    """The angle-only loss has a gradient orthogonal to each class weight (cos is scale-free)."""
    learner = uer()
    x, y, level = batch()
    learner._loss(learner.backbone(x), y, level, learner.cosine_logits).backward()
    w, grad = learner.weights[0].detach(), learner.weights[0].grad
    torch.testing.assert_close((w * grad).sum(1), torch.zeros(4), atol=1e-6, rtol=0)
    learner.weights[0].grad = None
    learner._loss(learner.backbone(x), y, level, learner.dot_logits).backward()
    assert (w * learner.weights[0].grad).sum(1).abs().max() > 1e-3


def test_replay_joins_the_step_with_the_stream_batch_size():
    learner = uer()
    drawn: list[int] = []
    sample = learner.memory.sample
    learner.memory.sample = lambda n, **kw: drawn.append(n) or sample(n, **kw)  # type: ignore[method-assign]
    x, y, level = batch(8)
    learner.learn(x, y, level)  # memory empty: stream loss only
    assert drawn == [] and learner.memory_samples == 8
    learner.learn(*batch(5, seed=1), iterations=2)
    assert drawn == [5, 5]


def test_unseen_classes_score_minus_infinity():
    learner = create("uer", PROBLEM, SMALL)
    x, _, level = batch()
    y = torch.tensor([0, 2] * 4)
    learner.learn(x, y, level)
    scores = learner.predict(x)
    assert torch.isinf(scores[:, [1, 3]]).all() and torch.isfinite(scores[:, [0, 2]]).all()
    assert F.softmax(scores, 1)[:, [1, 3]].sum() == 0


def test_every_memory_policy_and_retrieval_plugs_in():
    learner = create(
        "uer",
        PROBLEM,
        {**SMALL, "memory": {"capacity": 6, "policy": "clib", "retrieval": "nearest"}},
    )
    for seed in range(3):
        learner.learn(*batch(4, seed))
    assert learner.memory_samples == 6
