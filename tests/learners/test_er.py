"""ER (learners/er.py): unseen classes masked, replay before insert, and with every memory
policy and retrieval mode: it learns, hands its backbone's features to the memory, and resumes
from a checkpoint exactly."""

from __future__ import annotations

import pytest
import torch

from learners import checks, registry
from learners.base import Problem
from learners.registry import create
from learners.state.safetensors_io import state_from_bytes, state_to_bytes


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
    er.learn(torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), iterations=0)
    assert er.memory_samples == 4
    er.learn(torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), iterations=1)
    assert er.memory_samples == 5 and er.memory.seen == 8


MODES = [
    ("reservoir", "uniform"),
    ("reservoir", "nearest"),
    ("class_balanced", "class_balanced"),
    ("clib", "per_level"),
    ("clib", "nearest"),
]


def make(policy: str, retrieval: str, seed: int = 0):
    options = {
        "backbone": {"hidden": [32], "out_dim": 16},
        "memory": {"capacity": 40, "policy": policy, "retrieval": retrieval, "refresh_chunk": 8},
        "seed": seed,
    }
    return registry.create("er", checks.check_problem("er"), options)


@pytest.mark.parametrize(("policy", "retrieval"), MODES)
def test_er_learns_and_resumes_exactly_with_each_memory_mode(policy, retrieval):
    learner = make(policy, retrieval, seed=2)
    checks.stream_through(learner, checks.blobs("er", 200, seed=1))
    test = checks.blobs("er", 100, seed=2)
    assert checks.accuracies(learner, test)[0] >= 0.6
    assert learner.memory_samples == 40
    restored = make(policy, retrieval, seed=2)
    restored.load_state_dict(state_from_bytes(state_to_bytes(learner.state_dict())))
    more = checks.blobs("er", 60, seed=3)
    checks.stream_through(learner, more)
    checks.stream_through(restored, more)
    assert torch.equal(learner.predict(test[0]), restored.predict(test[0]))
    assert torch.equal(learner.memory.ids, restored.memory.ids)


def test_er_embeds_with_its_backbone():
    learner = make("reservoir", "nearest")
    checks.stream_through(learner, checks.blobs("er", 40, seed=4))
    stored = learner.memory.x[: len(learner.memory)]
    with torch.no_grad():
        features = learner.backbone(stored)
    # refresh_chunk 8 per batch of 10: the 8 oldest are re-embedded after each insert, so the
    # memory's embeddings are the current backbone's for at least the latest chunk.
    current = torch.isclose(learner.memory.index.vectors[: len(stored)], features, atol=1e-5)
    assert current.all(1).sum() >= 8
    learner.memory.refresh_embeddings()
    assert torch.allclose(learner.memory.index.vectors[: len(stored)], features, atol=1e-5)
