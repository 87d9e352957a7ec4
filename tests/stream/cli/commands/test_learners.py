"""``streamcl learners`` lists each learner's own defaults, nested options included."""

from __future__ import annotations

from learners import registry
from stream.cli.commands.learners import describe_options


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
