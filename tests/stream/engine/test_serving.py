"""Serving while learning (stream/engine/serving.py): predictions served, labels joined later."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from learners.base import Problem
from learners.registry import create
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop, LoopConfig
from stream.engine.label_join import LabelJoin
from stream.engine.serving import MAX_RESTORED_QUEUE, Served, ServingLoop

PROBLEM = Problem(input_shape=(3,), num_classes=(3,))


def _serving(batch_size: int = 4, **join) -> ServingLoop:
    loop = EventLoop(create("nmc", PROBLEM), PROBLEM, LoopConfig(batch_size=batch_size))
    return ServingLoop(loop, LabelJoin(**join))


def _label(serving: ServingLoop, ids, y, now=1.0):
    n = len(ids)
    return serving.label(np.array(ids), np.array(y), np.zeros(n, np.int64), now)


def test_prequential_accuracy_scores_the_prediction_served_not_a_later_one():
    serving = _serving()
    eye = np.eye(3, dtype=np.float32)
    serving.request(np.array([0, 1]), eye[:2], now=0.0)  # nothing learned: no prediction
    _label(serving, [0, 1], [0, 1])
    served = serving.request(np.array([2, 3]), eye[:2], now=2.0).predicted[:, 0]
    assert served.tolist() == [0, 1]
    _label(serving, [2, 3], [1, 1])  # the model would now be right on 3, it served 0 for 2
    serving.flush()
    assert serving.loop.prequential.correct == 1 and serving.loop.prequential.total == 2
    assert serving.loop.samples_seen == 4


def test_labels_are_learned_before_the_next_request_whatever_the_batch_size():
    serving = _serving(batch_size=16)
    serving.request(np.array([0]), np.eye(3, dtype=np.float32)[:1], now=0.0)
    _label(serving, [0], [2])
    assert serving.loop.samples_seen == 0  # queued
    assert serving.request(np.array([1]), np.eye(3, dtype=np.float32)[:1], 1.0).position == 1
    assert serving.loop.samples_seen == 1


def test_a_label_for_no_pending_request_is_unmatched_and_learns_nothing():
    serving = _serving(max_pending=1)
    x = np.eye(3, dtype=np.float32)
    serving.request(np.array([0, 1]), x[:2], now=0.0)  # 0 expires when 1 arrives
    joined = _label(serving, [0, 9, 1], [0, 0, 1], now=3.0)
    serving.flush()
    assert joined.unmatched == [0, 9] and joined.delays == [3.0]
    assert serving.expired == 1 and serving.unmatched == 2 and serving.loop.samples_seen == 1


def test_a_batch_of_joined_labels_never_spans_a_task_change():
    serving = _serving(batch_size=8)
    x = np.eye(3, dtype=np.float32)
    serving.request(np.arange(3), x, now=0.0, task=np.array([0, 0, 1]))
    _label(serving, [0, 1, 2], [0, 1, 2])
    serving.flush()
    assert serving.loop.current_task == 1 and serving.loop.samples_seen == 3


def test_a_prediction_served_before_a_crash_is_the_one_kept_for_the_label():
    serving = _serving()
    x = np.eye(3, dtype=np.float32)
    serving.request(np.array([0]), x[:1], now=0.0)
    _label(serving, [0], [0])
    earlier = Served(predicted=[2], served_at=5.0)
    prediction = serving.request(np.array([1, 2]), x[:2], now=9.0, served=[earlier, None])
    assert prediction.predicted[:, 0].tolist() == [2, 0]
    pending = serving.join.pending
    assert (pending[1].predicted, pending[1].served_at) == ([2], 5.0)
    assert (pending[2].predicted, pending[2].served_at) == ([0], 9.0)


def test_labelled_samples_are_predicted_then_learned_as_without_serving():
    serving = _serving()
    plain = EventLoop(create("nmc", PROBLEM), PROBLEM, LoopConfig(batch_size=4))
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, 4))
        batch = Batch(x=x, y=y, level=torch.zeros(4, dtype=torch.long))
        serving.learn(batch)
        plain.process(batch)
    assert serving.loop.prequential.state_dict() == plain.prequential.state_dict()


def test_the_state_round_trips_with_joined_samples_still_queued():
    """A checkpoint does not learn the queue early (where checkpoints fall must not change the
    micro-batches): the queued samples go into the state and come back to be learned."""
    serving = _serving(batch_size=16)
    x = np.eye(3, dtype=np.float32)
    serving.request(np.array([0, 1]), x[:2], now=0.0)
    _label(serving, [0], [1])
    state = json.loads(json.dumps(serving.state_dict()))
    assert serving.loop.samples_seen == 0 and len(state["queue"]) == 1
    restored = _serving(batch_size=16)
    restored.load_state_dict(state)
    assert list(restored.join.pending) == [1] and restored.predictions == 2
    restored.flush()
    serving.flush()
    assert restored.loop.samples_seen == serving.loop.samples_seen == 1
    for key, tensor in serving.loop.learner.state_dict().tensors.items():
        assert torch.equal(tensor, restored.loop.learner.state_dict().tensors[key])


@pytest.mark.parametrize(
    "queue",
    [
        [{"x": "AAAAAA==", "shape": [3], "joined": [0, 0, -1, 0, 0, 0]}],  # 1 value, not 3
        [{"x": base64.b64encode(np.full(3, np.nan, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [0, 0, -1, 0, 0, 0]}],
        [{"x": base64.b64encode(np.zeros(3, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [7, 0, -1, 0, 0, 0]}],  # label 7 of 3 classes
        [{"x": base64.b64encode(np.zeros(3, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [0, 0]}],
        [{"x": base64.b64encode(np.zeros(3, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [0, 0, -1, 3, 0, 0]}],  # served class 3 of 3 classes
        [{"x": base64.b64encode(np.zeros(3, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [0, 0, -1, 0, 0, 0.5]}],
        ["x"],
        [{"x": base64.b64encode(np.zeros(3, "<f4").tobytes()).decode(), "shape": [3],
          "joined": [0, 0, -1, 0, 0, 0]}] * (MAX_RESTORED_QUEUE + 1),  # more than any batch
    ],
)  # fmt: skip
def test_a_queue_no_checkpoint_writes_is_refused(queue):
    serving = _serving(batch_size=16)
    state = serving.state_dict()
    with pytest.raises(ValueError):
        serving.load_state_dict({**state, "queue": queue})


def test_a_window_with_a_nan_input_is_refused_before_its_label_could_teach_it():
    """The join window of a checkpoint is outside bytes too: its inputs are learned when their
    labels come, marked as checked, so the restore checks them (the old restore took this NaN
    and its label then turned every class mean of ``nmc`` into NaN)."""
    serving = _serving(batch_size=1)
    serving.request(np.array([0]), np.eye(3, dtype=np.float32)[:1], now=0.0)
    state = json.loads(json.dumps(serving.state_dict()))
    state["join"]["requests"][0]["x"] = base64.b64encode(
        np.array([np.nan, 0, 0], "<f4").tobytes()
    ).decode()
    restored = _serving(batch_size=1)
    restored.request(np.array([5]), np.eye(3, dtype=np.float32)[1:2], now=0.0)
    before = restored.state_dict()
    with pytest.raises(ValueError, match="request 0: the input holds a NaN"):
        restored.load_state_dict(state)
    assert restored.state_dict() == before


@pytest.mark.parametrize(
    "counters",
    [{"predictions": -1}, {"expired": "3"}, {"unmatched": None}],
)
def test_counters_a_checkpoint_could_not_have_written_are_refused(counters):
    serving = _serving()
    state = {**serving.state_dict(), **counters}
    with pytest.raises(ValueError, match="serving state"):
        serving.load_state_dict(state)


def test_a_sequential_learner_serves_and_learns_joined_labels():
    loop = EventLoop(create("river:naive_bayes.GaussianNB", PROBLEM), PROBLEM)
    serving = ServingLoop(loop)
    x = np.eye(3, dtype=np.float32)
    assert serving.request(np.arange(3), x, now=0.0).predicted[:, 0].tolist() == [-1, -1, -1]
    _label(serving, [0, 1, 2], [0, 1, 2])
    serving.flush()
    assert loop.samples_seen == 3 and loop.prequential.total == 0  # none was answered
    assert (serving.request(np.arange(3, 6), x, now=2.0).predicted >= 0).all()


@pytest.mark.parametrize(("name", "rtol"), [("nmc", 0), ("acil", 1e-12), ("aef-ocl", 1e-12)])
def test_where_joined_labels_are_flushed_does_not_change_these_learners(name, rtol):
    """These learners' models do not depend on how joined samples are cut into micro-batches
    (the daemon may flush when a poll ends on an idle topic): nmc's class sums exactly, the
    ridge heads' statistics to rounding (the Gram products of other cuts add in another order,
    which on some CPUs' BLAS kernels differs in the last bit)."""
    problem = Problem(input_shape=(4,), num_classes=(3,))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 4)).astype(np.float32), rng.integers(0, 3, 12)

    def learned(flush_after: int) -> dict[str, torch.Tensor]:
        serving = ServingLoop(
            EventLoop(create(name, problem), problem, LoopConfig(batch_size=4, eval_period=None))
        )
        serving.request(np.arange(12), x, now=0.0)
        for i in range(12):
            serving.label(np.array([i]), y[i : i + 1], np.array([0]), now=1.0)
            if i == flush_after:
                serving.flush()  # a poll ended here
        serving.flush()
        return serving.loop.learner.state_dict().tensors

    one, other = learned(5), learned(-1)
    for key, tensor in one.items():
        torch.testing.assert_close(tensor, other[key], rtol=rtol, atol=0, msg=key)


def test_a_queue_written_with_a_larger_batch_size_is_restored_and_learned():
    """loop.batch_size may change between runs: a queue of 5 joined samples (batch size 16)
    restored where the batch size is 4 is learned, in batches of 4, at the next label."""
    serving = _serving(batch_size=16)
    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    serving.request(np.arange(6), x, now=0.0)
    _label(serving, list(range(5)), [0, 1, 2, 0, 1])
    restored = _serving(batch_size=4)
    restored.load_state_dict(json.loads(json.dumps(serving.state_dict())))
    assert restored.loop.samples_seen == 0
    _label(restored, [5], [2])
    assert restored.loop.samples_seen == 6
