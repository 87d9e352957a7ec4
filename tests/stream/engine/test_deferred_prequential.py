"""stream/engine/deferred_prequential.py: a run of batches counted at once equals counting each
batch as it comes (the loop's per-batch path, which any observer selects)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.base import Learner, Problem
from learners.capabilities import FusedPrediction
from learners.registry import create
from learners.state.learner_state import LearnerState
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule
from stream.engine.batch import Batch
from stream.engine.deferred_prequential import DeferredPrequential
from stream.engine.evaluation import AnytimeEvaluator
from stream.engine.event_loop import EventLoop, LoopConfig, Observer
from stream.observe.loop_log import LoopLogger
from stream.observe.progress import ProgressBar
from stream.sources.file_source import task_batches

CLASSES = 7


class ScoreTable(Learner):
    """Scores each sample with its row of a fixed table (``x[:, 0]`` is the row), written
    into one output tensor that every ``predict`` overwrites, as a learner reusing its
    buffers may."""

    name = "score-table"

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(Problem(input_shape=(1,), num_classes=(table.shape[1],)), None)
        self.table = table
        self.out = torch.empty(64, table.shape[1])

    def predict(self, x, level=0):
        out = self.out[: len(x)]
        out.copy_(self.table[x[:, 0].long()])
        return out

    def learn(self, x, y, level, iterations=1):
        pass

    def state_dict(self):
        return LearnerState()

    def load_state_dict(self, state):
        pass


class FusedScoreTable(ScoreTable, FusedPrediction):
    """The table's scores from one fused call, a new tensor each time (the caller's to keep,
    which the loop then keeps uncopied)."""

    def predict_then_learn(self, x, y, level=None, iterations=1):
        return self.table[x[:, 0].long()].clone()


def hostile_scores(rng: np.random.Generator, n: int) -> torch.Tensor:
    """Scores with ties, -inf rows and entries, +inf and NaN, for classes seen or not."""
    scores = rng.integers(-3, 4, size=(n, CLASSES)).astype(np.float32)  # many ties
    special = rng.random((n, CLASSES))
    scores[special < 0.08] = -np.inf
    scores[(special >= 0.08) & (special < 0.1)] = np.inf
    scores[(special >= 0.1) & (special < 0.12)] = np.nan
    scores[rng.random(n) < 0.05] = -np.inf  # rows the learner cannot answer
    scores[rng.random(n) < 0.05, 0] = -0.0
    return torch.from_numpy(scores)


def counted(loop: EventLoop) -> dict:
    state = loop.state_dict()
    return {"seen": state["seen"], "prequential": state["prequential"]}


# +inf scores of unseen classes meet the -inf of the mask on both paths
@pytest.mark.filterwarnings("ignore:invalid value encountered in add:RuntimeWarning")
@pytest.mark.parametrize("fused", [False, True], ids=["copied", "kept"])
@pytest.mark.parametrize("seed", range(6))
def test_a_run_counted_at_once_equals_each_batch_counted(seed, fused):
    rng = np.random.default_rng(seed)
    n = 900
    table = hostile_scores(rng, n)
    # classes come in over the stream, several first shown in one batch, some never
    labels = np.minimum(rng.integers(0, CLASSES - 1, n), np.arange(n) // 40)
    cuts = np.unique(rng.integers(1, n, 120))
    config = LoopConfig(batch_size=64, eval_period=None, prequential_windows=[5, 50, 1000])
    kind = FusedScoreTable if fused else ScoreTable
    loops = [
        EventLoop(kind(table), kind(table).problem, config, observers=observers)
        for observers in ([], [Observer()])
    ]
    reads = set(rng.choice(len(cuts) + 1, 6, replace=False).tolist())
    for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, n], strict=True)):
        size = min(hi - lo, 64)
        rows = torch.arange(lo, lo + size)
        batch = Batch(
            x=rows[:, None].float(),
            y=torch.from_numpy(labels[lo : lo + size]),
            level=torch.zeros(size, dtype=torch.long),
        )
        for loop in loops:
            loop.process(batch)
        if i in reads:  # a reader in between (a checkpoint, a gauge) counts what is kept
            assert counted(loops[0]) == counted(loops[1])
    assert loops[0]._deferred.rows > 0 and loops[1]._deferred.rows == 0  # kept; counted
    assert counted(loops[0]) == counted(loops[1])
    assert loops[0].prequential.values() == loops[1].prequential.values()


def test_batches_are_kept_until_something_reads_them():
    table = torch.eye(CLASSES)
    loop = EventLoop(ScoreTable(table), ScoreTable(table).problem, LoopConfig(eval_period=None))
    for labels in ([0, 1], [1, 2], [2, 2]):
        y = torch.tensor(labels)
        loop.process(Batch(x=y[:, None].float(), y=y, level=torch.zeros(2, dtype=torch.long)))
    assert loop._deferred.rows == 6
    # class 1 counts from the second batch on, class 2 from the third: 3 of 4 answered are hits
    assert (loop.prequential.correct, loop.prequential.total) == (3, 4)
    assert loop._deferred.rows == 0 and loop.seen.state_dict() == [[0, 1, 2]]


def test_capacity_follows_the_number_of_classes():
    assert DeferredPrequential(None, None, 10).capacity == 1024
    assert DeferredPrequential(None, None, 100_000).capacity == 2
    assert DeferredPrequential(None, None, 10_000_000).capacity == 1


class QuietObserver(Observer):
    """Sees every batch, reads no hits."""

    reads_hits = False

    def __init__(self) -> None:
        self.calls: list[tuple[int, object]] = []

    def on_batch(self, loop, batch, hits, learn_seconds):
        self.calls.append((len(batch), hits))


def test_observers_that_read_no_hits_see_every_batch_and_keep_the_counting_deferred():
    table = torch.eye(CLASSES)
    quiet = QuietObserver()
    loop = EventLoop(
        ScoreTable(table),
        ScoreTable(table).problem,
        LoopConfig(eval_period=None),
        observers=[quiet],
    )
    for labels in ([0, 1], [1, 2], [2, 2]):
        y = torch.tensor(labels)
        loop.process(Batch(x=y[:, None].float(), y=y, level=torch.zeros(2, dtype=torch.long)))
    assert quiet.calls == [(2, None)] * 3 and loop._deferred.rows == 6
    loop.observers.append(Observer())  # one that reads hits: counted per batch from now on
    y = torch.tensor([0, 1])
    loop.process(Batch(x=y[:, None].float(), y=y, level=torch.zeros(2, dtype=torch.long)))
    assert loop._deferred.rows == 0 and quiet.calls[-1][1].tolist() == [True, True]
    assert (loop.prequential.correct, loop.prequential.total) == (5, 6)


@pytest.mark.parametrize("learner_name", ["nmc", "er"])
def test_a_replay_with_evaluations_gives_the_per_batch_results(learner_name):
    """Evaluations and task ends read the seen classes in between: both paths give the same
    curve, accuracies and checkpoint (``er`` predicts fused, ``nmc`` in two calls). The
    command line's progress bar and loop log read no hits: its replays count deferred."""
    ds = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", ds, {}, seed=2)
    stream = record_schedule(ds, schedule, "si-blurry", params.model_dump(), 2)
    problem = ds.problem()
    ev = AnytimeEvaluator(as_float_tensor(ds.X_test), torch.from_numpy(ds.y_test_levels), problem)
    config = LoopConfig(eval_period=300, batch_size=16, prequential_windows=[100, 1000])
    results = []
    quiet = [ProgressBar(len(stream), learner_name, enabled=False), LoopLogger(learner_name)]
    for observers in ([], quiet, [Observer()]):
        learner = create(learner_name, problem, {"seed": 1})
        loop = EventLoop(
            learner, problem, config, ev, num_tasks=schedule.num_tasks, observers=observers
        )
        loop.run(task_batches(stream, ds, config.batch_size))
        summary = loop.summary()
        state = loop.state_dict()
        for timing in ("learn_seconds", "evaluation_seconds"):
            del state[timing]
        results.append((summary, state))
    assert results[0] == results[1] == results[2]
