"""Building learners by name (learners/registry.py)."""

from __future__ import annotations

import pytest
import torch

from learners import registry
from learners.base import Problem
from learners.registry import LearnerConfigError

PROBLEM = Problem(input_shape=(4,), num_classes=(3,))


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10**12"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"),
    ],
)
def test_a_learner_too_large_to_allocate_is_a_config_error(monkeypatch, failure):
    """A backbone layer of 10**8 units failed with the allocator's error (exit 1)."""
    nmc = registry.get("nmc")

    def too_large(*args, **kwargs):
        raise failure

    monkeypatch.setattr(nmc, "__init__", too_large)
    with pytest.raises(LearnerConfigError, match="'nmc' as configured needs more memory than cpu"):
        registry.create("nmc", PROBLEM)


def test_other_runtime_errors_of_a_learner_are_not_called_config_errors(monkeypatch):
    nmc = registry.get("nmc")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(nmc, "__init__", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        registry.create("nmc", PROBLEM)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"backbone": {"hidden": [-5]}}, "backbone.hidden.0"),  # was a RuntimeError at build
        ({"backbone": {"hidden": [0]}}, "backbone.hidden.0"),  # was a constant backbone
        ({"backbone": {"name": "cnn", "channels": [0]}}, "backbone.channels.0"),
        ({"backbone": {"hidden": [8] * 65}}, "backbone.hidden"),
        ({"seed": 10**23}, "seed"),  # was an overflow in torch.manual_seed
        ({"seed": -1}, "seed"),
    ],
)
def test_widths_and_seeds_out_of_range_are_config_errors(options, field):
    with pytest.raises(LearnerConfigError, match=field):
        registry.validate_config("er", options)
