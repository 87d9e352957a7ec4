"""AEF-OCL (learners/aef_ocl.py): the pseudo-feature generator, and the balanced
head that helps on imbalanced streams without ever touching the real statistics."""

from __future__ import annotations

import pytest
import torch

from learners.aef_ocl import pseudo_feature_generator
from learners.base import Problem
from learners.linalg.class_moments import ClassMoments
from learners.linalg.ridge import one_hot
from learners.registry import create
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from tests.support.learner_streams import joint_ridge, relative_error

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES, DIM = 10, 32
PROBLEM = Problem(input_shape=(DIM,), num_classes=(CLASSES,))
OPTIONS = {"buffer_size": 256}


def imbalanced(seed: int, major: int = 400, minor: int = 40, separation: float = 0.5):
    """Overlapping Gaussian classes, shuffled; classes 5-9 are ``major/minor`` times rarer.

    Returns the stream and a balanced test set (200 per class)."""
    generator = torch.Generator().manual_seed(seed)
    centres = separation * torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(99))
    sizes = torch.tensor([major if c < CLASSES // 2 else minor for c in range(CLASSES)])
    y = torch.arange(CLASSES).repeat_interleave(sizes)
    x = centres[y] + torch.randn(len(y), DIM, generator=generator)
    order = torch.randperm(len(y), generator=generator)
    y_test = torch.arange(CLASSES).repeat_interleave(200)
    x_test = centres[y_test] + torch.randn(len(y_test), DIM, generator=generator)
    return x[order], y[order], x_test, y_test


def feed(learner, x, y, batch: int = 16, prequential: bool = True) -> None:
    for start in range(0, len(y), batch):
        if prequential:
            learner.predict(x[start : start + batch])
        yb = y[start : start + batch]
        learner.learn(x[start : start + batch], yb, torch.zeros_like(yb))


def mean_class_accuracy(learner, x, y) -> float:
    predicted = learner.predict(x).argmax(1)
    return float(
        torch.stack([(predicted[y == c] == c).double().mean() for c in range(CLASSES)]).mean()
    )


def test_pseudo_features_fill_every_seen_class_up_to_the_peak():
    x, y, _, _ = imbalanced(1)
    moments = ClassMoments(CLASSES + 1, DIM, "diagonal")  # the last class is never seen
    moments.update(x.double(), y)
    draws = list(
        pseudo_feature_generator(moments, 1.0, torch.Generator().manual_seed(0), chunk=500)
    )
    labels = torch.cat([labels for _, labels in draws])
    features = torch.cat([features for features, _ in draws])
    filled = moments.counts + torch.bincount(labels, minlength=CLASSES + 1)
    assert filled[:CLASSES].tolist() == [400.0] * CLASSES and filled[CLASSES] == 0
    z = (features - moments.mean[labels]) / moments.std()[labels]  # N(0, 1) if drawn right
    assert abs(float(z.mean())) < 0.02 and abs(float(z.var()) - 1) < 0.03
    again = list(
        pseudo_feature_generator(moments, 1.0, torch.Generator().manual_seed(0), chunk=500)
    )
    assert torch.equal(features, torch.cat([f for f, _ in again]))


def test_real_statistics_are_never_polluted():
    x, y, x_test, _ = imbalanced(2)
    aef = create("aef-ocl", PROBLEM, {**OPTIONS, "refresh_every": 100})
    acil = create("acil", PROBLEM, OPTIONS)
    feed(aef, x, y)
    feed(acil, x, y)
    aef.predict(x_test)
    aef.predict(x_test)  # two evaluations in a row (the official code pollutes the head here)
    for name, tensor in acil.heads[0].state_dict().tensors.items():
        if not name.startswith("solution."):  # the cached solutions differ: acil solves its own
            assert torch.equal(aef.heads[0].state_dict().tensors[name], tensor), name
    for head in (acil.heads[0], aef.heads[0]):
        head.drop_cache()  # both solve the statistics afresh
    assert torch.equal(aef.heads[0].weights(), acil.weights())
    assert relative_error(aef.weights(), acil.weights()) > 1e-3


def test_balanced_solution_is_the_real_data_plus_one_draw_of_pseudo_features():
    x, y, _, _ = imbalanced(3)
    aef = create("aef-ocl", PROBLEM, {**OPTIONS, "refresh_every": 10_000})
    feed(aef, x[:1000], y[:1000], prequential=False)
    aef.weights()  # draws the pseudo-features for the first 1000 samples
    # The next rows are appended to the balanced solution, which is rebuilt from the same draw
    # each time it runs out of room (every 64 rows with this buffer): never a new draw.
    feed(aef, x[1000:], y[1000:], batch=16, prequential=True)
    moments = ClassMoments(CLASSES, DIM, "diagonal")
    moments.update(aef.features(x[:1000]), y[:1000])
    pseudo = list(pseudo_feature_generator(moments, 1.0, aef.draw_generator(0)))
    H = torch.cat([aef.expand(x)] + [aef.buffer(features) for features, _ in pseudo])
    labels = torch.cat([y] + [labels for _, labels in pseudo])
    expected = joint_ridge(H, one_hot(labels, CLASSES))
    assert relative_error(aef.weights(), expected) <= 1e-8


def test_beats_acil_on_mean_class_accuracy_when_some_classes_are_ten_times_rarer():
    gains = []
    for seed in range(3):
        x, y, x_test, y_test = imbalanced(seed)
        aef = create("aef-ocl", PROBLEM, {**OPTIONS, "seed": seed})
        acil = create("acil", PROBLEM, {**OPTIONS, "seed": seed})
        feed(aef, x, y, prequential=False)
        feed(acil, x, y, prequential=False)
        gains.append(
            mean_class_accuracy(aef, x_test, y_test) - mean_class_accuracy(acil, x_test, y_test)
        )
    assert min(gains) > 0.05, gains


def test_checkpoint_round_trip_redraws_identically():
    """The restored learner draws the same pseudo-features and keeps the balanced solution the
    saved one held: the two predict the same scores, bit for bit."""
    x, y, x_test, _ = imbalanced(4)
    options = {**OPTIONS, "refresh_every": 300}
    learner = create("aef-ocl", PROBLEM, options)
    feed(learner, x[:900], y[:900])
    restored = create("aef-ocl", PROBLEM, options)
    restored.load_state_dict(state_from_bytes(state_to_bytes(learner.state_dict())))
    assert learner.restore_tolerance == 0.0
    assert torch.equal(restored.predict(x_test), learner.predict(x_test))
    feed(learner, x[900:], y[900:])
    feed(restored, x[900:], y[900:])
    assert restored.draws == learner.draws
    assert torch.equal(restored.predict(x_test), learner.predict(x_test))
    assert torch.equal(restored.predict(x_test).argmax(1), learner.predict(x_test).argmax(1))


def test_merge_equals_the_learner_that_saw_both_halves():
    x, y, x_test, _ = imbalanced(5)
    whole, first, second = (create("aef-ocl", PROBLEM, OPTIONS) for _ in range(3))
    feed(whole, x, y, prequential=False)
    feed(first, x[:800], y[:800])
    feed(second, x[800:], y[800:], batch=64)
    first.merge(second)
    assert relative_error(first.heads[0].weights(), whole.heads[0].weights()) <= 1e-8
    assert torch.allclose(first.moments[0].m2, whole.moments[0].m2, rtol=1e-10, atol=0)
    first.draws = list(whole.draws)  # the same next draw index, so the same pseudo-features
    assert relative_error(first.weights(), whole.weights()) <= 1e-8
    assert torch.equal(first.predict(x_test).argmax(1), whole.predict(x_test).argmax(1))


def test_each_level_of_a_hierarchy_is_balanced_on_its_own(digits):
    problem, x, y, level = digits.two_levels()
    learner = create("aef-ocl", problem, {"buffer_size": 64})
    for start in range(0, len(y), 16):
        rows = slice(start, start + 16)
        learner.learn(x[rows], y[rows], level[rows])
    for lvl in range(2):
        mine = level == lvl
        assert (
            learner.moments[lvl].counts.tolist()
            == torch.bincount(y[mine], minlength=problem.num_classes[lvl]).double().tolist()
        )
        assert learner.predict(x[:4], level=lvl).shape == (4, problem.num_classes[lvl])
        drawn = learner.drawn[lvl]
        assert drawn is not None and torch.equal(drawn.counts, learner.moments[lvl].counts)
