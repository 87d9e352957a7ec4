import numpy as np
import pytest
import torch

from learners.base import Learner, Problem
from learners.state.learner_state import LearnerState
from stream.engine.evaluation import AnytimeEvaluator


class FixedScores(Learner):
    """Scores given per test row: ``x[:, 0]`` indexes a score table."""

    name = "fixed"

    def __init__(self, problem, table):
        super().__init__(problem, None)
        self.table = table

    def predict(self, x, level=0):
        return self.table[level][x[:, 0].long()]

    def learn(self, x, y, level, iterations=1):
        raise AssertionError("not used")

    def state_dict(self):
        return LearnerState()

    def load_state_dict(self, state):
        pass


def test_only_seen_classes_are_scored_and_unseen_masked():
    problem = Problem(input_shape=(1,), num_classes=(3,))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.arange(6, dtype=torch.float32)[:, None]
    # every row prefers the unseen class 2, then its own true class
    table = torch.zeros(6, 3)
    table[:, 2] = 10.0
    table[torch.arange(6), y] += 5.0
    table[1] = torch.tensor([0.0, 1.0, 10.0])  # row 1 (class 0) wrongly prefers class 1
    evaluator = AnytimeEvaluator(x, y[:, None], problem)
    seen = [torch.tensor([True, True, False])]
    ev = evaluator.evaluate(FixedScores(problem, [table]), seen, samples_seen=7)
    # rows of class 2 are not evaluated; row 1 is wrong; rows 0, 2, 3 are right
    assert ev.accuracy == pytest.approx(3 / 4)
    assert ev.level_accuracy == [pytest.approx(3 / 4)]
    np.testing.assert_allclose(ev.class_accuracy[0], [0.5, 1.0, 0.0])
    assert ev.samples_seen == 7


def test_nothing_seen_gives_no_accuracy():
    problem = Problem(input_shape=(1,), num_classes=(2,))
    evaluator = AnytimeEvaluator(torch.zeros(3, 1), torch.zeros(3, 1, dtype=torch.long), problem)
    ev = evaluator.evaluate(
        FixedScores(problem, [torch.zeros(1, 2)]), [torch.zeros(2, dtype=torch.bool)], 0
    )
    assert ev.accuracy is None and ev.level_accuracy == [None]


def test_coarse_either_accuracy_counts_the_parent_of_the_fine_prediction():
    # 2 coarse classes, 4 fine classes; fine c has parent c // 2
    problem = Problem(
        input_shape=(1,),
        num_classes=(2, 4),
        level_names=("coarse", "fine"),
        parents=((0, 0, 1, 1),),
    )
    fine = torch.tensor([0, 1, 2, 3])
    levels = torch.stack([fine // 2, fine], 1)
    x = torch.arange(4, dtype=torch.float32)[:, None]
    coarse_scores = torch.tensor(
        [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    )  # right on rows 1
    fine_scores = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [1.0, 0, 0, 0]]
    )  # fine right on row 0 only; the parent of the fine prediction is right on rows 0 and 2
    learner = FixedScores(problem, [coarse_scores, fine_scores])
    seen = [torch.tensor([True, True]), torch.ones(4, dtype=torch.bool)]
    ev = AnytimeEvaluator(x, levels, problem).evaluate(learner, seen, 10)
    assert ev.level_accuracy == [pytest.approx(0.25), pytest.approx(0.25)]
    # coarse right on row 1; parent of fine prediction right on rows 0 and 2
    assert ev.either_accuracy == [pytest.approx(0.75)]
    assert ev.accuracy == pytest.approx(2 / 8)


HLE_PROBLEM = Problem(
    input_shape=(1,), num_classes=(2, 4), level_names=("coarse", "fine"), parents=((0, 0, 1, 1),)
)
# Four test samples, one per fine class; fine classes 0, 1 are children of coarse 0, and 2, 3 of 1.
HLE_Y_TEST = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])


class TableLearner(Learner):
    """Scores read from a table: input ``[i]`` is test sample ``i``."""

    name = "table"

    def __init__(self, predictions: dict[int, list[int]]) -> None:
        super().__init__(HLE_PROBLEM, None)  # type: ignore[arg-type]
        self.predictions = predictions
        self.asked: dict[int, list[int]] = {0: [], 1: []}

    def predict(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        rows = x[:, 0].long()
        self.asked[level] += rows.tolist()
        chosen = torch.tensor(self.predictions[level])[rows]
        return torch.nn.functional.one_hot(chosen, HLE_PROBLEM.num_classes[level]).float()

    def learn(self, x, y, level, iterations=1):
        raise NotImplementedError

    def state_dict(self) -> LearnerState:
        return LearnerState()

    def load_state_dict(self, state: LearnerState) -> None:
        pass


def evaluate_hle(predictions, seen_coarse, seen_fine):
    evaluator = AnytimeEvaluator(torch.arange(4.0)[:, None], HLE_Y_TEST, HLE_PROBLEM, batch_size=3)
    learner = TableLearner(predictions)
    seen = [torch.zeros(2, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)]
    seen[0][seen_coarse] = True
    seen[1][seen_fine] = True
    return evaluator.evaluate(learner, seen, samples_seen=10), learner


def test_either_uses_the_fine_head_on_every_coarse_test_sample():
    # The coarse head is always wrong; only fine class 0 was seen, so the fine head says 0.
    evaluation, learner = evaluate_hle({0: [1, 1, 0, 0], 1: [0, 0, 0, 0]}, [0, 1], [0])
    assert evaluation.level_accuracy == [0.0, 1.0]
    # Sample 1's own fine class is unseen, but the fine prediction (class 0) has the right
    # parent, so HLE counts it: samples 0 and 1 of 4.
    assert evaluation.either_accuracy == [0.5]
    assert sorted(learner.asked[1]) == [0, 1, 2, 3]
    # Pooled: 0 of 4 coarse hits plus 1 of 1 fine hit.
    assert evaluation.accuracy == pytest.approx(1 / 5)


def test_either_is_the_coarse_accuracy_before_any_fine_class():
    evaluation, learner = evaluate_hle({0: [0, 1, 0, 1], 1: [0, 0, 0, 0]}, [0, 1], [])
    assert evaluation.level_accuracy == [0.5, None]
    assert evaluation.either_accuracy == [0.5]
    assert learner.asked[1] == []


def test_only_test_samples_of_seen_classes_count_per_level():
    evaluation, _ = evaluate_hle({0: [0, 0, 1, 1], 1: [0, 2, 2, 3]}, [1], [2, 3])
    # Coarse: only samples of coarse class 1 (2 and 3), both right. Fine: samples 2, 3; the
    # prediction 3 for sample 3 is right, 2 for sample 2 is right.
    assert evaluation.level_accuracy == [1.0, 1.0]
    assert evaluation.class_accuracy[0].tolist() == [0.0, 1.0]
    assert evaluation.class_accuracy[1].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_one_backbone_pass_for_every_level_gives_the_per_level_evaluation():
    """ER scores every level from one pass (MultiLevelPrediction); the same evaluation,
    ``either`` accuracy included, as asking ``predict`` level by level."""
    from learners.registry import create

    problem = Problem(
        input_shape=(5,),
        num_classes=(2, 4),
        level_names=("coarse", "fine"),
        parents=((0, 0, 1, 1),),
    )
    generator = torch.Generator().manual_seed(0)
    learner = create("er", problem, {"backbone": {"hidden": [16], "out_dim": 8}})
    for _ in range(10):
        x = torch.randn(8, 5, generator=generator)
        level = torch.randint(0, 2, (8,), generator=generator)
        y = torch.randint(0, 4, (8,), generator=generator) // torch.where(level == 0, 2, 1)
        learner.learn(x, y, level)

    class PerLevel(FixedScores):
        def predict(self, x, level=0):
            return learner.predict(x, level)

    fine = torch.randint(0, 4, (40,), generator=generator)
    evaluator = AnytimeEvaluator(
        torch.randn(40, 5, generator=generator), torch.stack([fine // 2, fine], 1), problem, 16
    )
    for seen in (
        [torch.tensor([True, True]), torch.tensor([True, False, False, True])],
        [torch.tensor([True, False]), torch.tensor([False, False, False, False])],
        [torch.tensor([False, False]), torch.tensor([False, True, True, False])],
    ):
        fused = evaluator.evaluate(learner, seen, 0)
        per_level = evaluator.evaluate(PerLevel(problem, None), seen, 0)
        assert fused.to_json() == per_level.to_json()


def test_a_row_with_no_finite_score_for_a_seen_class_is_wrong_not_class_0():
    """A NaN row's argmax, and that of a row scoring -inf for every seen class, is class 0:
    it counted as a hit for test samples of class 0."""
    problem = Problem(input_shape=(1,), num_classes=(3,))
    y = torch.tensor([0, 0, 1])
    x = torch.arange(3, dtype=torch.float32)[:, None]
    table = torch.tensor([[float("nan")] * 3, [float("-inf"), float("-inf"), 1.0], [0.0, 1.0, 0.0]])
    evaluator = AnytimeEvaluator(x, y[:, None], problem)
    seen = [torch.tensor([True, True, False])]
    ev = evaluator.evaluate(FixedScores(problem, [table]), seen, samples_seen=3)
    assert ev.accuracy == pytest.approx(1 / 3) and ev.unanswered == 2
    np.testing.assert_allclose(ev.class_accuracy[0], [0.0, 1.0, 0.0])
