"""The shared replay learn loop (learners/replay_training.py): results pinned to those from
before it was made faster, fused prediction, and the fallback for models with mode-dependent
layers."""

import pytest
import torch
from torch import nn

from learners.base import Problem
from learners.capabilities import FusedPrediction
from learners.registry import create
from learners.replay_training import mode_free
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import prepare, replay

HLE = "synthetic-hierarchy:branching=4x3,train=40,test=20,dim=8,separation=2"

# Measured with main at 14206bf, before the loop was made faster (two calls per batch, Adam
# looping over parameters, every level predicted on its own): the same seeds must give exactly
# these figures, prequential accuracy included.
PINNED = {
    ("er", "flat", 1.0): (0.4169014084507042, 0.32829081348130834, 0.31837307152875177),
    ("er", "flat", 1.5): (0.5887323943661972, 0.3366841200290588, 0.453015427769986),
    ("uer", "flat", 1.0): (0.3380281690140845, 0.22441157627995315, 0.4782608695652174),
    ("er", "hle", 1.0): (0.8916666666666667, 0.9464409722222222, 0.8017241379310345),
    ("uer", "hle", 1.0): (0.8958333333333334, 0.9502604166666667, 0.8081896551724138),
}


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pinned")

    def recorded(spec, schedule, params):
        dataset = load_dataset(spec)
        events, parsed = make_schedule(schedule, dataset, params, 1)
        stream = record_schedule(dataset, events, schedule, parsed.model_dump(mode="json"), 1)
        return prepare(write_stream(directory / f"{schedule}.scl", stream), dataset)

    return {
        "flat": recorded("digits", "si-blurry", {}),
        "hle": recorded(HLE, "hle", {"scenario": "dual", "tasks": 3}),
    }


@pytest.mark.parametrize(("learner", "stream", "online_iter"), sorted(PINNED))
def test_results_equal_those_from_before_the_speedup(streams, learner, stream, online_iter):
    torch.set_num_threads(1)  # the pinned figures were measured on one thread
    if stream == "flat":
        options, loop = {"memory": {"capacity": 200}}, LoopConfig(eval_period=300)
    else:
        options, loop = {"lr": 3e-3, "memory": {"capacity": 100}}, LoopConfig(eval_period=120)
    loop = loop.model_copy(update={"online_iter": online_iter})
    results = replay(streams[stream], learner, options, loop, "cpu")
    figures = (results["A_last"], results["A_auc"], results["prequential_accuracy"])
    assert figures == PINNED[(learner, stream, online_iter)]
    assert 0 < results["evaluation_seconds"] < results["seconds"]


def hierarchy() -> Problem:
    return Problem(
        input_shape=(6,),
        num_classes=(2, 4),
        level_names=("coarse", "fine"),
        parents=((0, 0, 1, 1),),
    )


@pytest.mark.parametrize("name", ["er", "uer", "pl-fms"])
def test_fused_prediction_on_two_levels_equals_predict_then_learn(name):
    """Each row is scored at its own level, padded with -inf beyond that level's classes."""
    problem = hierarchy()
    options = {"backbone": {"hidden": [16], "out_dim": 8}, "memory": {"capacity": 20}, "seed": 3}
    fused, plain = create(name, problem, options), create(name, problem, options)
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        x = torch.randn(8, 6, generator=generator)
        level = torch.randint(0, 2, (8,), generator=generator)
        y = torch.randint(0, 4, (8,), generator=generator) // torch.where(level == 0, 2, 1)
        expected = torch.full((8, 4), float("-inf"))
        for lvl in (0, 1):
            rows = level == lvl
            expected[rows, : problem.num_classes[lvl]] = plain.predict(x[rows], lvl)
        plain.learn(x, y, level)
        scores = fused.predict_then_learn(x, y, level)
        assert torch.equal(scores.isinf(), expected.isinf())
        torch.testing.assert_close(scores, expected)
    test = torch.randn(10, 6, generator=generator)
    assert torch.equal(fused.predict(test, 1), plain.predict(test, 1))


def test_a_model_with_dropout_predicts_with_its_own_forward():
    """Dropout changes the training forward: the prediction must come from ``predict``."""
    problem = Problem(input_shape=(6,), num_classes=(3,))
    learner = create("er", problem, {"backbone": {"hidden": [16], "out_dim": 8}})
    assert isinstance(learner, FusedPrediction) and mode_free(learner.model)
    learner.backbone.net.insert(1, nn.Dropout(0.5))
    assert not mode_free(learner.model)
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    learner.learn(x, y, torch.zeros_like(y))
    expected = learner.predict(x)
    scores = learner.predict_then_learn(x, y, torch.zeros_like(y))
    assert torch.equal(scores, expected)
