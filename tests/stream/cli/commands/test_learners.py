"""``streamcl learners`` lists each learner's own defaults, nested options included."""

from __future__ import annotations

from learners import registry
from stream.cli.commands.learners import describe_options, run


def policy_line(name):
    lines = describe_options(registry.get(name).config_model)
    return next(line for line in lines if line.strip().startswith("memory.policy:"))


def test_pl_fms_lists_its_class_balanced_memory():
    assert "= 'class_balanced'" in policy_line("pl-fms")
    assert "= 'reservoir'" in policy_line("er")


def test_nested_options_show_the_learners_defaults_not_the_nested_class_defaults():
    lines = describe_options(registry.get("mvp").config_model)
    assert any(
        line.startswith("    backbone.name: ") and line.endswith("= 'vit'") for line in lines
    )
    assert any(line.startswith("    backbone.freeze: bool = True") for line in lines)
    assert any(line.startswith("    memory.capacity: int = 0") for line in lines)
    assert any(line.startswith("    backbone.vit.depth: int = 6") for line in lines)


def test_the_listing_says_mvp_refuses_without_pretrained_weights(capsys):
    assert run(None) == 0
    mvp_line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("mvp ")
    )
    assert "refuses without backbone.weights" in mvp_line and "streamcl pretrain" in mvp_line


def test_learners_that_always_freeze_their_backbone_do_not_list_freeze_as_a_choice(capsys):
    """nmc, slda and the analytic heads listed ``backbone.freeze: bool = False`` and ignored
    it; the listing now says what they do, and they do it."""
    from learners.base import Problem

    problem = Problem(input_shape=(8,), num_classes=(3,))
    options = {"backbone": {"name": "mlp", "hidden": [8], "out_dim": 4, "freeze": False}}
    assert run(None) == 0
    out = "\n" + capsys.readouterr().out
    frozen = []
    for name in registry.names():
        if ":<" in name or "backbone" not in registry.get(name).config_model.model_fields:
            continue
        listed = out.split(f"\n{name}  —  ")[1].split("\n\n")[0]
        if registry.get(name).frozen_backbone:
            frozen.append(name)
            assert "backbone.freeze: always true" in listed, name
            learner = registry.create(name, problem, options)
            assert not any(p.requires_grad for p in learner.backbone.parameters()), name
        else:
            assert "backbone.freeze: bool = " in listed, name
    assert sorted(frozen) == ["acil", "aef-ocl", "ds-al", "nmc", "slda"]
