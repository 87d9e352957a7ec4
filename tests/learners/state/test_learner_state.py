"""learners/state/learner_state.py: parts nest under a prefix and come back out unchanged."""

from __future__ import annotations

import torch

from learners.state.learner_state import LearnerState


def test_put_then_part_round_trips_tensors_and_meta():
    whole = LearnerState({"seen.0": torch.ones(2)})
    whole.put("memory", LearnerState({"x": torch.zeros(3)}, {"seen": 5}))
    whole.put("heads.0", LearnerState({"G": torch.eye(2)}))
    assert set(whole.tensors) == {"seen.0", "memory.x", "heads.0.G"}
    assert whole.meta == {"memory": {"seen": 5}}  # a part without meta adds none
    memory = whole.part("memory")
    assert set(memory.tensors) == {"x"} and memory.meta == {"seen": 5}
    assert torch.equal(whole.part("heads.0").tensors["G"], torch.eye(2))
    assert whole.part("heads.1") == LearnerState()


def test_a_prefix_is_not_a_prefix_of_a_longer_name():
    whole = LearnerState()
    whole.put("heads.1", LearnerState({"G": torch.eye(1)}))
    whole.put("heads.10", LearnerState({"G": torch.zeros(1)}))
    assert torch.equal(whole.part("heads.1").tensors["G"], torch.eye(1))
