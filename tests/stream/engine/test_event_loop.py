import json

import numpy as np
import pytest
import torch

from learners.base import Learner, Problem
from learners.registry import create
from learners.state.learner_state import LearnerState
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule
from stream.engine.batch import Batch
from stream.engine.evaluation import AnytimeEvaluator
from stream.engine.event_loop import EventLoop, LoopConfig, Observer
from stream.engine.validation import BatchError
from stream.sources.file_source import task_batches

PROBLEM = Problem(input_shape=(2,), num_classes=(4,))


class Recorder(Learner):
    """Predicts class x[:, 0]; records every learn call."""

    name = "recorder"

    def __init__(self, problem=PROBLEM):
        super().__init__(problem, None)
        self.calls: list[tuple[int, int]] = []

    def predict(self, x, level=0):
        return torch.nn.functional.one_hot(x[:, 0].long(), self.problem.num_classes[level]).float()

    def learn(self, x, y, level, iterations=1):
        self.calls.append((len(y), iterations))

    def state_dict(self):
        return LearnerState(meta={"calls": self.calls})

    def load_state_dict(self, state):
        self.calls = [tuple(c) for c in state.meta["calls"]]


def batch(labels, predicted=None, task=None):
    y = torch.tensor(labels)
    guess = torch.tensor(predicted if predicted is not None else labels)
    x = torch.stack([guess.float(), torch.zeros(len(y))], 1)
    t = None if task is None else torch.full((len(y),), task)
    return Batch(x=x, y=y, level=torch.zeros(len(y), dtype=torch.long), task=t)


def evaluator():
    y = torch.tensor([0, 1, 2, 3])
    return AnytimeEvaluator(torch.stack([y.float(), torch.zeros(4)], 1), y[:, None], PROBLEM)


@pytest.mark.parametrize(
    ("online_iter", "expected"),
    [
        (1.0, [1, 1, 1, 1]),
        (0.5, [0, 1, 0, 1]),
        (1.5, [1, 2, 1, 2]),
        (0.25, [0, 0, 0, 1]),
        (3.0, [3, 3, 3, 3]),
    ],
)
def test_online_iter_fractions_accumulate(online_iter, expected):
    learner = Recorder()
    loop = EventLoop(learner, PROBLEM, LoopConfig(online_iter=online_iter))
    for _ in range(4):
        loop.process(batch([0, 1]))
    assert [it for _, it in learner.calls] == expected


@pytest.mark.parametrize("online_iter", [1001.0, 1e9, float("inf"), float("nan"), -1.0])
def test_online_iter_is_bounded(online_iter):
    """A billion update steps a batch never returned (``--online-iter 1e9`` ran until killed);
    infinity overflowed the step count at the first batch."""
    with pytest.raises(ValueError, match="online_iter"):
        LoopConfig(online_iter=online_iter)


def test_prequential_predicts_before_learning_and_masks_unseen_classes():
    loop = EventLoop(Recorder(), PROBLEM)
    # Nothing seen yet: no class can be predicted, so the samples are left out (as river's
    # progressive_val_score leaves out samples its model cannot predict), even if the guess is right.
    loop.process(batch([0, 0]))
    assert loop.prequential.correct == 0 and loop.prequential.total == 0
    loop.process(batch([0, 1], predicted=[0, 1]))  # class 1 unseen before this batch
    assert loop.prequential.correct == 1
    loop.process(batch([1, 2, 0], predicted=[1, 3, 0]))  # 3 never seen: masked, so wrong
    assert loop.prequential.correct == 3 and loop.prequential.total == 5


class Abstainer(Recorder):
    """Like Recorder, but scores -inf throughout (no prediction) where x[:, 1] is 1."""

    def predict(self, x, level=0):
        scores = super().predict(x, level)
        scores[x[:, 1] == 1] = -torch.inf
        return scores


def test_rows_a_learner_cannot_predict_are_left_out_once_every_class_is_seen():
    loop = EventLoop(Abstainer(), PROBLEM)
    loop.process(batch([0, 1, 2, 3]))  # every class seen; nothing predicted yet
    b = batch([0, 1, 2, 3], predicted=[0, 1, 0, 3])
    b.x[[1, 2], 1] = 1  # abstains on a right and on a wrong guess
    loop.process(b)
    assert loop.prequential.correct == 2 and loop.prequential.total == 2


def test_periodic_evaluation_at_the_batch_that_reaches_each_mark():
    seen_at = []

    class Marks(Observer):
        def on_evaluation(self, loop, evaluation, kind):
            seen_at.append((kind, evaluation.samples_seen))

    loop = EventLoop(
        Recorder(), PROBLEM, LoopConfig(eval_period=40), evaluator(), observers=[Marks()]
    )
    for _ in range(8):
        loop.process(batch(list(range(4)) * 4))
    assert seen_at == [("periodic", 48), ("periodic", 80), ("periodic", 128)]
    loop.finish()
    assert seen_at[-1] == ("task_end", 128)


def test_task_ends_include_empty_tasks_and_the_last_tasks():
    loop = EventLoop(Recorder(), PROBLEM, LoopConfig(eval_period=None), evaluator(), num_tasks=5)
    loop.process(batch([0, 1], task=0))
    loop.process(batch([1], task=0))
    loop.process(batch([2], task=1))
    loop.process(batch([3], task=3))  # task 2 is empty
    loop.finish()  # task 4 is empty
    ends = [e.samples_seen for e in loop.evaluations.task_ends]
    assert ends == [3, 4, 4, 5, 5]
    summary = loop.summary()
    assert summary["A_last"] == 1.0 and len(summary["task_end_accuracies"]) == 5
    assert summary["curve"] == [] and summary["A_auc"] is None


def test_empty_leading_tasks_end_with_nothing_seen():
    loop = EventLoop(Recorder(), PROBLEM, LoopConfig(eval_period=None), evaluator(), num_tasks=3)
    loop.process(batch([0], task=2))
    loop.finish()
    assert [e.accuracy for e in loop.evaluations.task_ends] == [None, None, 1.0]


def test_a_bad_batch_is_refused_before_any_state_changes():
    learner = Recorder()
    loop = EventLoop(learner, PROBLEM)
    loop.process(batch([0, 1]))
    before = loop.state_dict()
    bad = [
        Batch(x=torch.zeros(2, 3), y=torch.tensor([0, 1]), level=torch.zeros(2, dtype=torch.long)),
        Batch(
            x=torch.tensor([[float("nan"), 0.0]]),
            y=torch.tensor([0]),
            level=torch.zeros(1, dtype=torch.long),
        ),
        Batch(x=torch.zeros(1, 2), y=torch.tensor([4]), level=torch.zeros(1, dtype=torch.long)),
        Batch(x=torch.zeros(1, 2), y=torch.tensor([-1]), level=torch.zeros(1, dtype=torch.long)),
        Batch(x=torch.zeros(1, 2), y=torch.tensor([0]), level=torch.ones(1, dtype=torch.long)),
        Batch(x=torch.zeros(2, 2), y=torch.tensor([0]), level=torch.zeros(1, dtype=torch.long)),
    ]
    for b in bad:
        with pytest.raises(BatchError):
            loop.process(b)
    assert loop.state_dict() == before and len(learner.calls) == 1


def digits_run(learner_name, batches_before_resume=None):
    ds = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", ds, {}, seed=3)
    stream = record_schedule(ds, schedule, "si-blurry", params.model_dump(), 3)
    problem = ds.problem()
    ev = AnytimeEvaluator(as_float_tensor(ds.X_test), torch.from_numpy(ds.y_test_levels), problem)
    config = LoopConfig(eval_period=200, online_iter=1.5)
    learner = create(learner_name, problem, {"seed": 1})
    loop = EventLoop(learner, problem, config, ev, num_tasks=schedule.num_tasks)
    batches = list(task_batches(stream, ds, config.batch_size))
    if batches_before_resume is None:
        loop.run(batches)
        return loop
    for b in batches[:batches_before_resume]:
        loop.process(b)
    # a fresh process: new learner and loop, restored from the saved states
    learner_state, loop_state = learner.state_dict(), loop.state_dict()
    learner2 = create(learner_name, problem, {"seed": 1})
    learner2.load_state_dict(learner_state)
    loop2 = EventLoop(learner2, problem, config, ev, num_tasks=schedule.num_tasks)
    loop2.load_state_dict(loop_state)
    loop2.run(batches[batches_before_resume:])
    return loop2


@pytest.mark.parametrize("learner_name", ["nmc", "er"])
def test_resumed_run_equals_uninterrupted_run(learner_name):
    whole = digits_run(learner_name)
    resumed = digits_run(learner_name, batches_before_resume=37)
    a, b = whole.summary(), resumed.summary()
    assert a["samples"] == b["samples"] == 1442
    assert a["curve"] == b["curve"]
    assert a["task_end_accuracies"] == b["task_end_accuracies"]
    assert a["F_last"] == b["F_last"] and a["prequential_accuracy"] == b["prequential_accuracy"]


def test_summary_has_every_spec_key():
    summary = digits_run("nmc").summary()
    for key in ("A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy", "samples", "curve"):
        assert key in summary
    assert 0.5 < summary["A_auc"] <= 1 and 0.5 < summary["A_last"] <= 1
    assert all(0 <= acc <= 1 for _, acc in summary["curve"])
    assert np.all(np.diff([s for s, _ in summary["curve"]]) > 0)


def test_a_task_id_jump_does_not_grow_the_daemons_loop_state():
    """A task id that jumps closes every task in between: without history (the daemon's loop)
    the state holds the run as a count, the same size whatever the jump."""
    problem = Problem(input_shape=(2,), num_classes=(2,))
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    evaluator = AnytimeEvaluator(x, torch.tensor([[0], [1]]), problem)
    level = torch.zeros(2, dtype=torch.long)
    sizes = {}
    for jump in (1, 50_000):
        loop = EventLoop(create("nmc", problem), problem, evaluator=evaluator, keep_history=False)
        loop.process(Batch(x=x, y=torch.tensor([0, 1]), level=level, task=torch.tensor([0, 0])))
        loop.process(Batch(x=x, y=torch.tensor([0, 1]), level=level, task=torch.tensor([jump] * 2)))
        sizes[jump] = len(json.dumps(loop.state_dict()))
    assert sizes[50_000] <= sizes[1] + 64  # a few more digits in the counts, no more


class HitsRecorder(Observer):
    def __init__(self):
        self.hits = []

    def on_batch(self, loop, batch, hits, learn_seconds):
        self.hits.append(hits.copy())


class TwoCalls(Learner):
    """A learner's ``predict`` and ``learn`` only: the engine's path without fused prediction."""

    name = "two-calls"

    def __init__(self, inner):
        super().__init__(inner.problem, inner.config)
        self.inner = inner

    def predict(self, x, level=0):
        return self.inner.predict(x, level)

    def learn(self, x, y, level, iterations=1):
        self.inner.learn(x, y, level, iterations)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


@pytest.mark.parametrize("learner_name", ["er", "uer", "pl-fms"])
def test_fused_prediction_gives_the_two_call_results_exactly(learner_name):
    ds = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", ds, {}, seed=3)
    stream = record_schedule(ds, schedule, "si-blurry", params.model_dump(), 3)
    problem = ds.problem()
    ev = AnytimeEvaluator(as_float_tensor(ds.X_test), torch.from_numpy(ds.y_test_levels), problem)
    config = LoopConfig(eval_period=400, online_iter=1.5)
    summaries, hits = [], []
    for wrap in (False, True):
        learner = create(learner_name, problem, {"seed": 1, "memory": {"capacity": 100}})
        recorder = HitsRecorder()
        loop = EventLoop(
            TwoCalls(learner) if wrap else learner,
            problem,
            config,
            ev,
            num_tasks=schedule.num_tasks,
            observers=[recorder],
        )
        loop.run(task_batches(stream, ds, config.batch_size))
        summary = loop.summary()
        summaries.append({k: summary[k] for k in ("curve", "A_last", "prequential_accuracy")})
        hits.append(np.concatenate(recorder.hits))
    assert summaries[0] == summaries[1]
    np.testing.assert_array_equal(hits[0], hits[1])


def test_evaluation_time_is_counted_apart_and_checkpointed():
    loop = digits_run("nmc")
    assert loop.evaluation_seconds > 0
    state = loop.state_dict()
    assert state["evaluation_seconds"] == loop.evaluation_seconds
    restored = EventLoop(create("nmc", loop.problem), loop.problem, loop.config)
    restored.load_state_dict(state)
    assert restored.evaluation_seconds == loop.evaluation_seconds


def _learned_loop() -> EventLoop:
    loop = EventLoop(create("nmc", PROBLEM), PROBLEM, LoopConfig(batch_size=4, online_iter=0.5))
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    zeros = torch.zeros(3, dtype=torch.long)
    loop.process(Batch(x=x, y=torch.tensor([0, 1, 2]), level=zeros, task=zeros))
    return loop


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pending_updates": float("nan")}, "pending_updates nan"),
        ({"pending_updates": 3.0}, "pending_updates 3.0"),
        ({"samples_seen": -5}, "samples_seen -5"),
        ({"samples_seen": "3"}, "samples_seen 3"),
        ({"current_task": "a"}, "task a"),
        ({"next_eval": -1}, "next_eval -1"),
        ({"learn_seconds": float("inf")}, "learn_seconds inf"),
        ({"seen": [[0, -1]]}, "class -1"),
        ({"seen": [[0, 4]]}, "class 4"),
        ({"seen": [[0], [1]]}, "a list of 1 levels"),
        ({"prequential": {"windows": [10**12], "correct": 0, "total": 0, "ring": [],
                          "position": 0}}, "window 1000000000000"),
        ({"prequential": {"windows": [10], "correct": 4, "total": 3, "ring": [],
                          "position": 0}}, "correct 4"),
        ({"prequential": {"windows": [10], "correct": 0, "total": 3, "ring": [-1],
                          "position": 0}}, "ring position -1"),
        ({"prequential": {"windows": [10], "correct": 0, "total": 3, "ring": [],
                          "position": 10}}, "position 10"),
    ],
)  # fmt: skip
def test_a_loop_state_no_run_could_write_is_refused(change, message):
    """A checkpoint's loop state is checked before the loop takes it: a NaN in
    ``pending_updates`` used to load and then fail every batch after the restore, a ring
    window of 10**12 to allocate a terabyte, a class -1 to mark the last class seen."""
    state = json.loads(json.dumps(_learned_loop().state_dict()))
    restored = EventLoop(create("nmc", PROBLEM), PROBLEM, LoopConfig(batch_size=4))
    with pytest.raises(ValueError, match=message):
        restored.load_state_dict({**state, **change})


TWO_LEVELS = Problem(
    input_shape=(2,), num_classes=(2, 4), level_names=("coarse", "fine"), parents=((0, 0, 1, 1),)
)


def leveled(rows):
    """A batch of (level, label, predicted class) rows for the ``Recorder`` learner."""
    level, y, guess = (torch.tensor(column) for column in zip(*rows, strict=True))
    x = torch.stack([guess.float(), torch.zeros(len(y))], 1)
    return Batch(x=x, y=y, level=level, task=torch.zeros(len(y), dtype=torch.long))


def _hierarchy_loop() -> EventLoop:
    loop = EventLoop(Recorder(TWO_LEVELS), TWO_LEVELS, LoopConfig(batch_size=8))
    # no coarse class seen yet: both abstain
    loop.process(leveled([(0, 0, 0), (0, 1, 1)]))
    # coarse: one hit, one miss; fine: no fine class seen yet, abstains
    loop.process(leveled([(0, 0, 0), (0, 1, 0), (1, 2, 2)]))
    # fine: only class 2 seen, so every row predicts 2: two hits, one miss
    loop.process(leveled([(1, 2, 2), (1, 3, 2), (1, 2, 2)]))
    return loop


def test_per_level_results_have_the_prequential_accuracy_and_samples_of_each_level():
    """SPEC: ``per_level`` has the same keys per level; the pooled prequential accuracy counts
    the predictions of every level, each level's only its own samples (abstentions left out)."""
    summary = _hierarchy_loop().summary()
    coarse, fine = summary["per_level"]["coarse"], summary["per_level"]["fine"]
    assert (coarse["prequential_accuracy"], coarse["samples"]) == (0.5, 4)
    assert (fine["prequential_accuracy"], fine["samples"]) == (2 / 3, 4)
    assert summary["prequential_accuracy"] == 3 / 5 and summary["samples"] == 8


def test_per_level_counts_survive_a_checkpoint_and_an_older_one_reports_them_unknown():
    state = json.loads(json.dumps(_hierarchy_loop().state_dict()))
    restored = EventLoop(Recorder(TWO_LEVELS), TWO_LEVELS, LoopConfig(batch_size=8))
    restored.load_state_dict(state)
    assert restored.summary()["per_level"] == _hierarchy_loop().summary()["per_level"]
    # a checkpoint written before the counts were kept: a count of part of the stream would
    # read as the whole stream's, so the level's figures are unknown
    older = EventLoop(Recorder(TWO_LEVELS), TWO_LEVELS, LoopConfig(batch_size=8))
    older.load_state_dict({k: v for k, v in state.items() if k != "level_prequential"})
    older.process(leveled([(1, 3, 3)]))
    fine = older.summary()["per_level"]["fine"]
    assert fine["prequential_accuracy"] is None and fine["samples"] is None
    assert older.summary()["prequential_accuracy"] == 4 / 6
    # and they stay unknown through the checkpoints after it (a second restart read the counts
    # since the first as the whole stream's)
    again = EventLoop(Recorder(TWO_LEVELS), TWO_LEVELS, LoopConfig(batch_size=8))
    again.load_state_dict(json.loads(json.dumps(older.state_dict())))
    assert again.summary()["per_level"]["fine"]["samples"] is None


@pytest.mark.parametrize(
    "counts, message",
    [
        ({"samples": [4, 4], "total": [2, 3], "correct": [3, 2]}, "level 0"),
        ({"samples": [4, 4], "total": [2, 5], "correct": [1, 2]}, "level 1"),
        ({"samples": [4], "total": [2], "correct": [1]}, "samples is not a list of 2"),
        ({"samples": [4, -1], "total": [2, 3], "correct": [1, 2]}, "samples -1"),
        ([1, 2], "not an object"),
    ],
)
def test_per_level_counts_no_run_could_write_are_refused(counts, message):
    state = json.loads(json.dumps(_hierarchy_loop().state_dict()))
    restored = EventLoop(Recorder(TWO_LEVELS), TWO_LEVELS, LoopConfig(batch_size=8))
    with pytest.raises(ValueError, match=message):
        restored.load_state_dict({**state, "level_prequential": counts})


def test_prequential_windows_are_bounded_in_the_config():
    with pytest.raises(ValueError, match="windows must be at most 16 distinct sizes"):
        LoopConfig(prequential_windows=[10**9])


@pytest.mark.parametrize("option", ["batch_size", "eval_batch_size"])
def test_batch_sizes_are_bounded(option):
    """A daemon keeps an unfilled micro-batch in memory and in each checkpoint: with a batch of
    10**12 on a busy topic (one that never polls empty) that grew without end."""
    LoopConfig(**{option: 1 << 16})
    with pytest.raises(ValueError, match=option):
        LoopConfig(**{option: (1 << 16) + 1})
