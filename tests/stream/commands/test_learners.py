from learners import registry
from stream.commands.learners import describe_options


def policy_line(name):
    lines = describe_options(registry.get(name).config_model)
    return next(line for line in lines if line.strip().startswith("memory.policy:"))


def test_pl_fms_lists_its_class_balanced_memory():
    assert "= 'class_balanced'" in policy_line("pl-fms")
    assert "= 'reservoir'" in policy_line("er")
