"""The learner contract (learners/checks.py), run over every registered learner."""

from __future__ import annotations

import pytest
import torch

from learners import checks, registry

CASES = [
    pytest.param(name, check, id=f"{name}-{check.__name__.removeprefix('check_')}")
    for name in registry.names()
    if ":<" not in name
    for check in checks.yield_checks(name)
]


@pytest.mark.parametrize(("name", "check"), CASES)
def test_contract(name, check):
    check(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("name", [n for n in registry.names() if ":<" not in n])
def test_runs_on_cuda(name):
    learner = checks.make(name, device="cuda")
    x, y = checks.blobs(name, 20, seed=1)
    checks.stream_through(learner, x, y)
    assert learner.predict(x).device.type == "cuda"
