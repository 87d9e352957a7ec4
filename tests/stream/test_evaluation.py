"""Per-level anytime evaluation and HLE's ``either`` coarse accuracy, on hand-made predictions."""

import pytest
import torch

from learners.base import Learner, LearnerState, Problem
from stream.evaluation import AnytimeEvaluator

PROBLEM = Problem(
    input_shape=(1,), num_classes=(2, 4), level_names=("coarse", "fine"), parents=((0, 0, 1, 1),)
)
# Four test samples, one per fine class; fine classes 0, 1 are children of coarse 0, and 2, 3 of 1.
Y_TEST = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])


class TableLearner(Learner):
    """Scores read from a table: input ``[i]`` is test sample ``i``."""

    name = "table"

    def __init__(self, predictions: dict[int, list[int]]) -> None:
        super().__init__(PROBLEM, None)  # type: ignore[arg-type]
        self.predictions = predictions
        self.asked: dict[int, list[int]] = {0: [], 1: []}

    def predict(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        rows = x[:, 0].long()
        self.asked[level] += rows.tolist()
        chosen = torch.tensor(self.predictions[level])[rows]
        return torch.nn.functional.one_hot(chosen, PROBLEM.num_classes[level]).float()

    def learn(self, x, y, level, iterations=1):
        raise NotImplementedError

    def state_dict(self) -> LearnerState:
        return LearnerState()

    def load_state_dict(self, state: LearnerState) -> None:
        pass


def evaluate(predictions, seen_coarse, seen_fine):
    evaluator = AnytimeEvaluator(torch.arange(4.0)[:, None], Y_TEST, PROBLEM, batch_size=3)
    learner = TableLearner(predictions)
    seen = [torch.zeros(2, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)]
    seen[0][seen_coarse] = True
    seen[1][seen_fine] = True
    return evaluator.evaluate(learner, seen, samples_seen=10), learner


def test_either_uses_the_fine_head_on_every_coarse_test_sample():
    # The coarse head is always wrong; only fine class 0 was seen, so the fine head says 0.
    evaluation, learner = evaluate({0: [1, 1, 0, 0], 1: [0, 0, 0, 0]}, [0, 1], [0])
    assert evaluation.level_accuracy == [0.0, 1.0]
    # Sample 1's own fine class is unseen, but the fine prediction (class 0) has the right
    # parent, so HLE counts it: samples 0 and 1 of 4.
    assert evaluation.either_accuracy == [0.5]
    assert sorted(learner.asked[1]) == [0, 1, 2, 3]
    # Pooled: 0 of 4 coarse hits plus 1 of 1 fine hit.
    assert evaluation.accuracy == pytest.approx(1 / 5)


def test_either_is_the_coarse_accuracy_before_any_fine_class():
    evaluation, learner = evaluate({0: [0, 1, 0, 1], 1: [0, 0, 0, 0]}, [0, 1], [])
    assert evaluation.level_accuracy == [0.5, None]
    assert evaluation.either_accuracy == [0.5]
    assert learner.asked[1] == []


def test_only_test_samples_of_seen_classes_count_per_level():
    evaluation, _ = evaluate({0: [0, 0, 1, 1], 1: [0, 2, 2, 3]}, [1], [2, 3])
    # Coarse: only samples of coarse class 1 (2 and 3), both right. Fine: samples 2, 3; the
    # prediction 3 for sample 3 is right, 2 for sample 2 is right.
    assert evaluation.level_accuracy == [1.0, 1.0]
    assert evaluation.class_accuracy[0].tolist() == [0.0, 1.0]
    assert evaluation.class_accuracy[1].tolist() == [0.0, 0.0, 1.0, 1.0]
