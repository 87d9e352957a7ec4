"""stream/engine/evaluation_aggregates.py: bounded aggregates give the full history's metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.engine import metrics
from stream.engine.evaluation import Evaluation
from stream.engine.evaluation_aggregates import EvaluationAggregates

CLASSES = (2, 3)


def _evaluations(count: int, seed: int = 0) -> list[tuple[str, Evaluation]]:
    """A run's evaluations: periodic ones with a task end every fourth, some levels unseen."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(count):
        levels = [None if (i < 3 and level == 1) else float(rng.random()) for level in range(2)]
        pooled = None if all(v is None for v in levels) else float(rng.random())
        per_class = [rng.random(k).round(3) for k in CLASSES]
        either = [float(rng.random())]
        kind = "task_end" if i % 4 == 3 else "periodic"
        made.append((kind, Evaluation(10 * (i + 1), pooled, levels, per_class, either)))
    return made


def _fed(keep_history: bool, evaluations, recent: int = 4) -> EvaluationAggregates:
    aggregates = EvaluationAggregates(CLASSES, keep_history, recent)
    for kind, evaluation in evaluations:
        aggregates.add(evaluation, kind)
    return aggregates


def test_bounded_aggregates_equal_the_metrics_of_the_whole_history():
    evaluations = _evaluations(41)
    bounded, full = _fed(False, evaluations), _fed(True, evaluations)
    periodic = [e for k, e in evaluations if k == "periodic"]
    ends = [e for k, e in evaluations if k == "task_end"]
    for series, value in [("all", lambda e: e.accuracy), ("level1", lambda e: e.level_accuracy[1])]:
        assert full.mean("periodic", series) == metrics.A_auc([value(e) for e in periodic])
        assert bounded.mean("periodic", series) == pytest.approx(
            full.mean("periodic", series), rel=1e-12
        )
        assert bounded.mean("task_end", series) == pytest.approx(
            metrics.A_avg([value(e) for e in ends]), rel=1e-12
        )
        assert bounded.last_value(series) == value(ends[-1])
    # max is exact: forgetting from the aggregates equals the formula over all task ends, bitwise
    pooled = np.stack([np.concatenate(e.class_accuracy) for e in ends])
    assert bounded.forgetting(None) == full.forgetting(None) == metrics.F_last(pooled)
    for level in range(2):
        by_level = np.stack([e.class_accuracy[level] for e in ends])
        assert bounded.forgetting(level) == metrics.F_last(by_level)
        assert bounded.running_forgetting(level) == full.running_forgetting(level)
    assert len(bounded.recent) == 4 and bounded.curve == [] and bounded.task_ends == []
    assert [p[0] for p in bounded.curve_points("all")] == [e.samples_seen for e in periodic][-3:]


def test_state_is_bounded_json_and_round_trips():
    short, long = _fed(False, _evaluations(40)), _fed(False, _evaluations(400))
    size = len(json.dumps(long.state_dict()))
    assert size <= 1.1 * len(json.dumps(short.state_dict()))
    restored = EvaluationAggregates(CLASSES, keep_history=False, recent=4)
    restored.load_state_dict(json.loads(json.dumps(long.state_dict())))
    more = _evaluations(8, seed=1)
    for kind, evaluation in more:
        long.add(evaluation, kind)
        restored.add(evaluation, kind)
    assert restored.state_dict() == long.state_dict()


def test_a_repeated_task_end_counts_for_the_means_but_is_no_new_measurement():
    aggregates = EvaluationAggregates((2,), keep_history=False)
    evaluation = Evaluation(5, 0.5, [0.5], [np.array([1.0, 0.0])])
    aggregates.add(evaluation, "task_end")
    aggregates.add(evaluation, "task_end", repeated=True)
    assert aggregates.counts["task_end"] == 2 and len(aggregates.recent) == 1


@pytest.mark.parametrize("keep_history", [False, True])
def test_many_empty_tasks_count_in_one_step_as_they_would_one_by_one(keep_history):
    """A task id jump (task 0, then 100000 from outside) closes every task between at once."""
    stepped, jumped = (_fed(keep_history, _evaluations(6)) for _ in range(2))
    last = _evaluations(8, seed=1)[-1][1]
    for aggregates in (stepped, jumped):
        aggregates.add(last, "task_end")
    for _ in range(3):
        stepped.add(last, "task_end", repeated=True)
    jumped.add(last, "task_end", repeated=True, times=3)
    assert jumped.counts == stepped.counts
    for series in ("all", "level0", "level1", "either0"):
        assert jumped.mean("task_end", series) == pytest.approx(stepped.mean("task_end", series))
    assert jumped.task_end_accuracies() == stepped.task_end_accuracies()
    for a, b in zip(jumped.best_before_last, stepped.best_before_last, strict=True):
        np.testing.assert_array_equal(a, b)
    if not keep_history:  # bounded: a billion empty tasks cost what three do
        jumped.add(last, "task_end", repeated=True, times=10**9)
        assert jumped.counts["task_end"] == stepped.counts["task_end"] + 10**9
    with pytest.raises(ValueError, match="only empty tasks"):
        jumped.add(last, "periodic", times=2)


def test_a_state_for_another_label_space_is_refused():
    state = _fed(False, _evaluations(8)).state_dict()
    with pytest.raises(ValueError, match="per-class accuracies"):
        EvaluationAggregates((2, 4), keep_history=False).load_state_dict(state)
