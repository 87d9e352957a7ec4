"""The learner contract (learners/checks.py), run over every registered learner on a one-level
and a two-level problem, with the checks of the capabilities each learner declares."""

from __future__ import annotations

import pytest
import torch

from learners import checks, registry

# Every built-in learner; tests/learners/test_river_learner.py runs the contract over river models.
NAMES = [name for name in registry.names() if ":<" not in name]

CASES = [
    pytest.param(
        name, levels, check, id=f"{name}-{levels}level-{check.__name__.removeprefix('check_')}"
    )
    for name in NAMES
    for check in checks.yield_checks(name)
    for levels in checks.LEVELS
]


@pytest.mark.parametrize(("name", "levels", "check"), CASES)
def test_contract(name, levels, check):
    check(name, levels)


def test_capabilities_pick_their_checks():
    assert checks.check_merge_equals_learning_the_union in set(checks.yield_checks("slda"))
    assert checks.check_merge_equals_learning_the_union not in set(checks.yield_checks("ds-al"))
    assert checks.check_drift_actions in set(checks.yield_checks("nmc"))
    assert checks.check_drift_actions not in set(checks.yield_checks("acil"))
    sequential = checks.check_test_then_train_is_predict_then_learn_per_sample
    assert sequential in set(checks.yield_checks("river:naive_bayes.GaussianNB"))
    assert sequential not in set(checks.yield_checks("nmc"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda(name):
    learner = checks.make(name, device="cuda")
    x, y, level = checks.blobs(name, 20, seed=1)
    checks.stream_through(learner, (x, y, level))
    assert learner.predict(x).device.type == "cuda"
