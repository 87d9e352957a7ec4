"""The event loop with river models: streamcl's prequential accuracy equals river's own
``evaluate.progressive_val_score`` exactly, on two of river's bundled datasets, at any batch
size; and the loop's per-sample (sequential) path and abstentions.

The reference side is river alone: its dataset objects (original feature values, original
labels), its model, its evaluation loop and its metrics. The streamcl side goes the user's way:
``river:NAME`` dataset, ``ordered`` schedule, a binary stream file, ``replay`` with micro-batches.
streamcl feeds float32 features; for these datasets and models that changes no prediction,
which the per-sample comparison below would reveal.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree, utils

from learners import registry
from learners.base import Problem
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop, LoopConfig, Observer
from stream.runs.recorded_run import prepare, replay

WINDOWS = [50, 500]
MODELS = {
    "naive_bayes.GaussianNB": ({}, naive_bayes.GaussianNB),
    "tree.HoeffdingTreeClassifier": ({}, tree.HoeffdingTreeClassifier),
    "linear_model.SoftmaxRegression": (
        {"preprocessing": [{"target": "preprocessing.StandardScaler"}]},
        lambda: preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
    ),
}


@pytest.fixture(scope="module", params=["Phishing", "ImageSegments"])
def recorded(request, tmp_path_factory):
    name = request.param
    dataset = load_dataset(f"river:{name}?test_every=0")
    schedule, params = make_schedule("ordered", dataset, {}, seed=0)
    path = tmp_path_factory.mktemp(name) / f"{name}.scl"
    write_stream(path, record_schedule(dataset, schedule, "ordered", params.model_dump(), 0))
    return name, prepare(path)


class Hits(Observer):
    def __init__(self):
        self.hits = []

    def on_batch(self, loop, batch, hits, learn_seconds):
        self.hits.append(hits.copy())


@functools.cache
def river_reference(name, target):
    """river's progressive validation: its accuracy, rolling accuracies and per-sample hits."""
    make_model = MODELS[target][1]
    steps = evaluate.iter_progressive_val_score(
        getattr(datasets, name)(), make_model(), metrics.Accuracy(), yield_predictions=True
    )
    predictions = [step["Prediction"] for step in steps]
    labels = [y for _, y in getattr(datasets, name)()]
    accuracy = metrics.Accuracy()
    rolling = {w: utils.Rolling(metrics.Accuracy, window_size=w) for w in WINDOWS}
    for y, y_pred in zip(labels, predictions, strict=True):
        if y_pred is not None:  # progressive_val_score skips samples the model cannot predict
            accuracy.update(y, y_pred)
            for metric in rolling.values():
                metric.update(y, y_pred)
    total = evaluate.progressive_val_score(
        getattr(datasets, name)(), make_model(), metrics.Accuracy()
    )
    assert total.get() == accuracy.get()
    hits = [p is not None and str(p) == str(y) for p, y in zip(predictions, labels, strict=True)]
    answered = sum(p is not None for p in predictions)
    return (
        sorted({str(y) for y in labels}),
        accuracy.get(),
        {str(w): m.get() for w, m in rolling.items()},
        np.array(hits),
        answered,
    )


@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("target", list(MODELS))
def test_prequential_accuracy_equals_river_progressive_val_score(recorded, target, batch_size):
    name, prepared = recorded
    options = MODELS[target][0]
    names, expected, expected_rolling, expected_hits, answered = river_reference(name, target)
    assert prepared.dataset.class_names == names
    observer = Hits()
    config = LoopConfig(batch_size=batch_size, eval_period=None, prequential_windows=WINDOWS)
    results = replay(prepared, f"river:{target}", options, config, "cpu", observers=[observer])
    assert results["samples"] == len(expected_hits)
    assert np.array_equal(np.concatenate(observer.hits), expected_hits)
    assert results["prequential_accuracy"] == expected
    assert results["prequential_accuracy_windows"] == expected_rolling
    assert round(results["prequential_accuracy"] * answered) == expected_hits.sum()


def test_batch_path_leaves_samples_out_until_the_learner_can_predict():
    problem = Problem(input_shape=(2,), num_classes=(3,))
    loop = EventLoop(registry.create("nmc", problem), problem, LoopConfig(eval_period=None))
    x = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [0.1, 0.0]])
    loop.process(Batch(x[:2], torch.tensor([0, 0]), torch.zeros(2, dtype=torch.long)))
    assert loop.prequential.total == 0, "nmc knows no class before the first batch"
    loop.process(Batch(x[2:], torch.tensor([2, 0]), torch.zeros(2, dtype=torch.long)))
    # Class 2 is new (a miss: nmc predicts the only class it knows), class 0 a hit.
    assert (loop.prequential.correct, loop.prequential.total) == (1, 2)


def test_sequential_path_counts_no_hit_on_a_class_not_yet_shown():
    problem = Problem(input_shape=(1,), num_classes=(3,))
    learner = registry.create("river:dummy.NoChangeClassifier", problem)
    # A broken learner that "predicts" each label before it was ever shown.
    learner.test_then_train = lambda x, y, level, iterations=1: y.clone()
    loop = EventLoop(learner, problem, LoopConfig(eval_period=None))
    loop.process(
        Batch(torch.zeros(3, 1), torch.tensor([1, 1, 2]), torch.zeros(3, dtype=torch.long))
    )
    loop.process(Batch(torch.zeros(2, 1), torch.tensor([2, 0]), torch.zeros(2, dtype=torch.long)))
    # Hits only on the second 1 and on the 2 of the second batch.
    assert (loop.prequential.correct, loop.prequential.total) == (2, 5)


def test_sequential_path_sees_classes_shown_earlier_in_the_same_batch():
    problem = Problem(input_shape=(1,), num_classes=(3,))
    learner = registry.create("river:dummy.NoChangeClassifier", problem)
    loop = EventLoop(learner, problem, LoopConfig(eval_period=None, prequential_windows=[2, 8]))
    # NoChange predicts the previous label: row 0 abstains, rows 1-2 hit, rows 3-4 miss.
    y = torch.tensor([2, 2, 2, 1, 0])
    loop.process(Batch(torch.zeros(5, 1), y, torch.zeros(5, dtype=torch.long)))
    assert (loop.prequential.correct, loop.prequential.total) == (2, 4)
    assert loop.prequential_values() == {"cumulative": 0.5, "2": 0.0, "8": 0.5}
