"""Building learners by name (learners/registry.py)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import BaseModel

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


def _sections(name):
    """The nested sections of a learner's config whose defaults are the learner's own."""
    config_model = registry.get(name).config_model
    for field_name, field in config_model.model_fields.items():
        if field.default_factory is not None:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                yield field_name, default


@pytest.mark.parametrize("name", [n for n in registry.names() if ":" not in n])
def test_a_nested_section_given_in_part_keeps_the_learners_defaults(name):
    """``{"backbone": {"freeze": true}}`` turned nmc's identity backbone into a random MLP, and
    any backbone key turned mvp's frozen ViT into a tuned one: the section was built from its
    own defaults, not the learner's. An empty section now equals the learner's default (the
    section checked alone: mvp's default needs a weights file to pass as a whole)."""
    config_model = registry.get(name).config_model
    for section, default in _sections(name):
        merged = config_model._over_the_learners_defaults({section: {}})
        assert type(default).model_validate(merged[section]) == default, section


def test_the_keys_given_go_over_the_learners_defaults_and_the_rest_stay(tmp_path):
    nmc = registry.validate_config("nmc", {"backbone": {"freeze": True}})
    assert (nmc.backbone.name, nmc.backbone.freeze) == ("identity", True)
    weights = str(tmp_path / "vit.safetensors")
    mvp = registry.validate_config(
        "mvp", {"backbone": {"weights": weights, "vit": {"depth": 5}}, "e_prompt_layers": [2]}
    )
    assert (mvp.backbone.name, mvp.backbone.freeze, mvp.backbone.vit.depth) == ("vit", True, 5)
    assert mvp.backbone.vit.embed_dim == 64  # the nested section's other keys stay too
    pl_fms = registry.validate_config("pl-fms", {"memory": {"capacity": 50}})
    assert (pl_fms.memory.capacity, pl_fms.memory.policy) == (50, "class_balanced")
    acil = registry.validate_config("acil", {"backbone": {"name": "mlp", "hidden": [8]}})
    assert (acil.backbone.name, acil.backbone.hidden) == ("mlp", [8])


def test_the_dotted_names_streamcl_learners_lists_are_accepted_as_keys():
    """``{"backbone.name": "mlp"}`` was refused as an extra input, though ``streamcl learners``
    lists the options by those names."""
    nmc = registry.validate_config("nmc", {"backbone.name": "mlp", "backbone.hidden": [8]})
    assert (nmc.backbone.name, nmc.backbone.hidden) == ("mlp", [8])
    acil = registry.validate_config("acil", {"backbone": {"hidden": [4]}, "backbone.vit.depth": 2})
    assert (acil.backbone.name, acil.backbone.hidden, acil.backbone.vit.depth) == (
        "identity",
        [4],
        2,
    )
    with pytest.raises(LearnerConfigError, match=r"backbone\.nme: Extra inputs"):
        registry.validate_config("nmc", {"backbone.nme": "mlp"})
    # dotted and nested keys of one section join, the caller's options left as they were
    options = {"backbone.vit.depth": 2, "backbone.vit": {"embed_dim": 32}}
    nmc = registry.validate_config("nmc", options)
    assert (nmc.backbone.vit.depth, nmc.backbone.vit.embed_dim) == (2, 32)
    assert options == {"backbone.vit.depth": 2, "backbone.vit": {"embed_dim": 32}}
    # one option given twice, in either order, is named (one of the two was silently dropped)
    for twice in (
        {"backbone.name": "mlp", "backbone": {"name": "cnn"}},
        {"backbone.name.x": 1, "backbone.name": "mlp"},
        {"backbone.name": "mlp", "backbone.name.x": 1},
    ):
        with pytest.raises(LearnerConfigError, match=r"option backbone\.name is given twice"):
            registry.validate_config("nmc", twice)


@pytest.mark.parametrize(
    "options",
    [{"lr": True}, {"memory": {"capacity": True}}, {"backbone": {"out_dim": True}}],
    ids=["lr", "memory.capacity", "backbone.out_dim"],
)
def test_a_boolean_where_a_number_goes_is_refused(options):
    """pydantic's lax mode read ``{"lr": true}`` as a learning rate of 1.0."""
    with pytest.raises(LearnerConfigError, match="true is not a number"):
        registry.validate_config("er", options)


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_backbone_size_that_is_not_finite_is_refused(value):
    """The learner's own options refused inf and NaN, its backbone's did not: a ViT with an
    infinite MLP ratio was accepted until it was built."""
    with pytest.raises(LearnerConfigError, match=r"backbone\.vit\.mlp_ratio"):
        registry.validate_config("nmc", {"backbone": {"name": "vit", "vit": {"mlp_ratio": value}}})
