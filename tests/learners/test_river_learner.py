"""river classifiers as learners (learners/river_learner.py): the contract suite over several
river models, score mapping, config safety and signed checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from river import base, linear_model, naive_bayes, tree

from learners import checks, registry
from learners.base import Problem
from learners.capabilities import DriftAction
from learners.registry import LearnerConfigError
from learners.state.sealed_pickle import SealError

# The contract suite only runs names without ``:<``; these stand for the family: a naive Bayes,
# a tree, a linear model, and a seeded forest (determinism under the learner's seed).
RIVER_MODELS = [
    "river:naive_bayes.GaussianNB",
    "river:tree.HoeffdingTreeClassifier",
    "river:linear_model.SoftmaxRegression",
    "river:forest.ARFClassifier",
]


@pytest.mark.parametrize(
    ("name", "levels", "check"),
    [
        pytest.param(
            name, levels, check, id=f"{name}-{levels}level-{check.__name__.removeprefix('check_')}"
        )
        for name in RIVER_MODELS
        for check in checks.yield_checks(name)
        for levels in checks.LEVELS
    ],
)
def test_contract(name, levels, check):
    check(name, levels)


def problem(k: int = 3, d: int = 2) -> Problem:
    return Problem(input_shape=(d,), num_classes=(k,))


def teach(learner, rows, labels):
    x = torch.tensor(rows, dtype=torch.float32)
    y = torch.tensor(labels)
    learner.learn(x, y, torch.zeros_like(y))


def test_scores_are_river_probabilities_and_minus_inf_for_untaught_classes():
    # Values exact in float32, so the wrapped model and the reference see the same numbers.
    rows, labels = [[0.0, 0.0], [0.25, 0.5], [5.0, 5.0], [5.25, 4.75]], [0, 0, 2, 2]
    learner = registry.create("river:naive_bayes.GaussianNB", problem(k=4))
    teach(learner, rows, labels)
    reference = naive_bayes.GaussianNB()
    for row, label in zip(rows, labels, strict=True):
        reference.learn_one(dict(enumerate(row)), label)
    scores = learner.predict(torch.tensor([[2.5, 2.5]]))[0]
    proba = reference.predict_proba_one({0: 2.5, 1: 2.5})
    assert scores.dtype == torch.float64
    assert scores[1] == -math.inf and scores[3] == -math.inf
    assert scores[0].item() == proba[0] and scores[2].item() == proba[2]
    assert 0 < proba[0] < 1


class LastLabel(base.Classifier):
    """A river classifier whose distribution holds only the last label it learned."""

    def __init__(self):
        self.last = None

    def learn_one(self, x, y):
        self.last = y

    def predict_proba_one(self, x):
        return {} if self.last is None else {self.last: 1.0}


def test_taught_class_left_out_of_river_distribution_scores_zero():
    learner = registry.create("river:naive_bayes.GaussianNB", problem(k=3))
    learner.models = [LastLabel()]
    teach(learner, [[0.0, 0.0], [1.0, 1.0]], [0, 1])
    assert learner.predict(torch.zeros(1, 2))[0].tolist() == [0.0, 1.0, -math.inf]


def test_abstains_while_river_cannot_predict():
    learner = registry.create("river:naive_bayes.GaussianNB", problem())
    scores = learner.predict(torch.zeros(2, 2))
    assert torch.isinf(scores).all() and (scores < 0).all()


def test_ties_resolve_to_river_choice():
    # After one sample of class 2 and one of class 1, the prior gives both 0.5 in the order
    # learned; river's predict_one returns the first (class 2), not the lowest id, and so must
    # the argmax of the scores.
    learner = registry.create("river:dummy.PriorClassifier", problem())
    teach(learner, [[0.0, 0.0], [1.0, 1.0]], [2, 1])
    x = torch.tensor([[0.5, 0.5]])
    assert learner.models[0].predict_one({0: 0.5, 1: 0.5}) == 2
    scores = learner.predict(x)[0]
    assert scores.argmax().item() == 2
    assert scores.tolist() == [-math.inf, math.nextafter(0.5, -math.inf), 0.5]


def test_models_with_their_own_predict_one_are_followed():
    # NoChangeClassifier predicts the last label with its own predict_one.
    learner = registry.create("river:dummy.NoChangeClassifier", problem())
    teach(learner, [[0.0, 0.0], [1.0, 1.0]], [2, 0])
    assert learner.predict(torch.zeros(1, 2)).argmax(1).item() == 0


@pytest.mark.parametrize("name", ["river:naive_bayes.GaussianNB", "river:dummy.PriorClassifier"])
def test_test_then_train_predicts_each_sample_before_learning_it(name):
    x, y, _ = checks.blobs("river:naive_bayes.GaussianNB", 40, seed=3)
    sequential, stepwise = checks.make(name), checks.make(name)
    predicted = sequential.test_then_train(x, y, torch.zeros_like(y))
    assert predicted.dtype == torch.long and predicted[0] == -1, "nothing to predict from yet"
    for i in range(len(y)):
        scores = stepwise.predict(x[i : i + 1])[0]
        expected = scores.argmax().item() if torch.isfinite(scores).any() else -1
        assert predicted[i].item() == expected, f"sample {i}"
        stepwise.learn(x[i : i + 1], y[i : i + 1], torch.zeros(1, dtype=torch.long))
    probe = checks.blobs("river:naive_bayes.GaussianNB", 20, seed=4)[0]
    assert torch.equal(sequential.predict(probe), stepwise.predict(probe))


def test_one_model_per_hierarchy_level():
    hierarchy = Problem(
        input_shape=(2,),
        num_classes=(2, 4),
        level_names=("coarse", "fine"),
        parents=((0, 0, 1, 1),),
    )
    learner = registry.create("river:naive_bayes.GaussianNB", hierarchy)
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.1, 0.0], [5.0, 5.1]])
    learner.learn(x, torch.tensor([0, 1, 1, 3]), torch.tensor([0, 0, 1, 1]))
    assert learner.predict(x, 0).shape == (4, 2)
    assert learner.predict(x, 1).shape == (4, 4)
    assert learner.predict(x, 1)[:, [0, 2]].isinf().all()
    predicted = learner.test_then_train(x, torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 0, 1]))
    assert predicted.tolist()[0] in (0, 1) and predicted.tolist()[1] in (1, 3)


def test_preprocessing_pipeline_and_nested_params():
    learner = registry.create(
        "river:linear_model.SoftmaxRegression",
        problem(),
        {
            "params": {"optimizer": {"target": "optim.SGD", "params": {"lr": 0.05}}},
            "preprocessing": [{"target": "preprocessing.StandardScaler"}],
        },
    )
    model = learner.models[0]
    assert list(model.steps) == ["StandardScaler", "SoftmaxRegression"]
    assert model["SoftmaxRegression"].optimizer.learning_rate == 0.05


def test_learner_seed_reaches_seeded_river_models():
    learner = registry.create("river:forest.ARFClassifier", problem(), {"seed": 7})
    assert learner.models[0].seed == 7


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("river:tree.NoSuchTree", {}, "not a class of river"),
        ("river:os.system", {}, "river has no module"),
        ("river:datasets.base.os", {}, "not a class of river"),
        ("river:compose.pipeline.Path", {}, "not a class of river"),
        ("river:tree._private", {}, "not a river class path"),
        ("river:GaussianNB", {}, "not a river class path"),
        ("river:preprocessing.StandardScaler", {}, "not a river classifier"),
        ("river:naive_bayes.GaussianNB", {"params": {"nope": 1}}, "GaussianNB"),
        (
            "river:naive_bayes.GaussianNB",
            {"preprocessing": [{"target": "tree.HoeffdingTreeClassifier"}]},
            "not a river transformer",
        ),
        (
            "river:linear_model.SoftmaxRegression",
            {"params": {"optimizer": {"target": "builtins.eval"}}},
            "river has no module",
        ),
    ],
)
def test_config_names_only_river_classes(name, options, message):
    with pytest.raises(LearnerConfigError, match=message):
        registry.create(name, problem(), options)


def test_binary_classifier_refuses_a_multiclass_level():
    with pytest.raises(LearnerConfigError, match="binary classifier"):
        registry.create("river:linear_model.LogisticRegression", problem(k=3))
    registry.create("river:linear_model.LogisticRegression", problem(k=2))


def test_a_checkpoint_key_is_not_learner_config():
    # The key lives at the edge (env var or key file, stream/daemon/checkpoint_key.py), never
    # in a config file that is copied around and logged.
    with pytest.raises(LearnerConfigError, match="checkpoint_key"):
        registry.create("river:naive_bayes.GaussianNB", problem(), {"checkpoint_key": "s3cret"})


def trained(options=None, seed=0):
    x, y, level = checks.blobs("river:naive_bayes.GaussianNB", 60, seed=seed)
    learner = registry.create(
        "river:tree.HoeffdingTreeClassifier", Problem((16,), (4,)), options or {}
    )
    checks.stream_through(learner, (x, y, level))
    return learner


def test_damaged_checkpoint_is_refused():
    state = trained().state_dict()
    damaged = state.tensors["models"].clone()
    damaged[len(damaged) // 2] ^= 1
    state.tensors["models"] = damaged
    fresh = registry.create("river:tree.HoeffdingTreeClassifier", Problem((16,), (4,)))
    with pytest.raises(SealError, match="damaged"):
        fresh.load_state_dict(state)


def test_checkpoint_of_another_model_is_refused():
    state = trained().state_dict()
    other = registry.create("river:naive_bayes.GaussianNB", Problem((16,), (4,)))
    with pytest.raises(ValueError, match=r"river:tree\.HoeffdingTreeClassifier"):
        other.load_state_dict(state)


def test_reset_on_drift_starts_a_fresh_model():
    learner = trained()
    assert DriftAction.RESET in learner.drift_actions
    learner.on_drift(DriftAction.RESET)
    assert torch.isneginf(learner.predict(torch.zeros(3, 16))).all()
    assert isinstance(learner.models[0], tree.HoeffdingTreeClassifier)
    assert learner.models[0].predict_proba_one(dict.fromkeys(range(16), 0.0)) == {}
    x, y, level = checks.blobs("river:naive_bayes.GaussianNB", 20, seed=9)
    checks.stream_through(learner, (x, y, level))
    assert torch.isfinite(learner.predict(x)).any(dim=1).all()


def test_river_reference_models_are_the_ones_wrapped():
    # The wrapper builds exactly river's class with the given parameters, nothing of its own.
    learner = registry.create(
        "river:linear_model.SoftmaxRegression", problem(), {"params": {"l2": 0.01}}
    )
    assert type(learner.models[0]) is linear_model.SoftmaxRegression
    assert learner.models[0].l2 == 0.01


def test_parameters_river_checks_only_on_use_are_a_config_error_before_any_sample():
    """``KNNClassifier(n_neighbors=0)`` builds, then fails its first prediction: replay ended
    with ``failed: ValueError: not enough values to unpack`` (exit 1), naming no option."""
    problem = Problem(input_shape=(3,), num_classes=(4,))
    with pytest.raises(LearnerConfigError, match=r"KNNClassifier' config: params: .*unpack"):
        registry.create("river:neighbors.KNNClassifier", problem, {"params": {"n_neighbors": 0}})
    # the probe teaches a copy: the learner itself starts knowing nothing
    knn = registry.create("river:neighbors.KNNClassifier", problem, {"params": {"n_neighbors": 1}})
    assert torch.isinf(knn.predict(torch.zeros(2, 3))).all()
