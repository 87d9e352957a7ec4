from learners import registry
from stream.commands.learners import describe_options


def test_nested_options_show_the_defaults_the_learner_gets():
    nmc = describe_options(registry.get("nmc").config_model)
    assert any(line.strip().startswith("backbone.name: Literal = 'identity'") for line in nmc)
    pl_fms = describe_options(registry.get("pl-fms").config_model)
    assert any("memory.policy: Literal = 'class-balanced'" in line for line in pl_fms)
    er = describe_options(registry.get("er").config_model)
    assert any("memory.policy: Literal = 'reservoir'" in line for line in er)
