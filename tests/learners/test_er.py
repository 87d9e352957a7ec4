"""ER (learners/er.py) with every memory policy and retrieval mode: it learns, hands its
backbone's features to the memory, and resumes from a checkpoint exactly."""

from __future__ import annotations

import pytest
import torch

from learners import checks, registry
from learners.state_io import state_from_bytes, state_to_bytes

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
    x, y = checks.blobs("er", 200, seed=1)
    checks.stream_through(learner, x, y)
    xt, yt = checks.blobs("er", 100, seed=2)
    assert checks.accuracy(learner, xt, yt) >= 0.6
    assert learner.memory_samples == 40
    restored = make(policy, retrieval, seed=2)
    restored.load_state_dict(state_from_bytes(state_to_bytes(learner.state_dict())))
    x2, y2 = checks.blobs("er", 60, seed=3)
    checks.stream_through(learner, x2, y2)
    checks.stream_through(restored, x2, y2)
    assert torch.equal(learner.predict(xt), restored.predict(xt))
    assert torch.equal(learner.memory.ids, restored.memory.ids)


def test_er_embeds_with_its_backbone():
    learner = make("reservoir", "nearest")
    x, y = checks.blobs("er", 40, seed=4)
    checks.stream_through(learner, x, y)
    stored = learner.memory.x[: len(learner.memory)]
    with torch.no_grad():
        features = learner.backbone(stored)
    # refresh_chunk 8 per batch of 10: the 8 oldest are re-embedded after each insert, so the
    # memory's embeddings are the current backbone's for at least the latest chunk.
    current = torch.isclose(learner.memory.index.vectors[: len(stored)], features, atol=1e-5)
    assert current.all(1).sum() >= 8
    learner.memory.refresh_embeddings()
    assert torch.allclose(learner.memory.index.vectors[: len(stored)], features, atol=1e-5)
