"""``--help`` as a user reads it: every option's default is shown."""

import argparse

import pytest

from stream.cli.main import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def defaulted(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` that have a default worth showing."""
    return [
        action
        for action in parser._actions
        if action.default is not None
        and action.default is not False
        and action.default is not argparse.SUPPRESS
        and action.default != []
    ]


def rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """``action``'s entry in ``parser``'s help, on one line (wide, so nothing wraps)."""
    formatter = parser.formatter_class(prog=parser.prog, width=10_000)
    formatter.add_argument(action)
    return formatter.format_help()


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_with_a_default_shows_it_in_help(name):
    parser = subcommands()[name]
    help_text = parser.format_help()
    missing = []
    for action in defaulted(parser):
        entry = rendered(parser, action)
        shown = str(action.default) if not isinstance(action.default, list) else ""
        if "default" not in entry.lower() or shown not in entry:
            missing.append(f"{'/'.join(action.option_strings)} (default {action.default!r})")
        assert action.option_strings[0] in help_text
    assert not missing, f"streamcl {name} --help leaves out: {', '.join(missing)}"


def test_the_defaults_the_help_once_left_out_are_shown():
    commands = subcommands()
    checks = {
        "replay": ["(default: 1000)", "(default: 16)", "(default: 1.0)"],
        "publish": ["(default: binary)", "(default: 64)", "(default: kafka-python)"],
        "predict": ["(default: predictions.jsonl)"],
        "demo": ["auto, cpu or cuda[:N] (default: auto)"],
    }
    for name, expected in checks.items():
        text = " ".join(commands[name].format_help().split())
        for piece in expected:
            assert piece in text, (name, piece)


def test_schedule_help_gives_each_schedules_own_default():
    text = " ".join(subcommands()["schedule"].format_help().split())
    assert "default: 5 for disjoint, i-blurry, si-blurry; 1 for ordered;" in text
    assert "(default: 50 for i-blurry, si-blurry)" in text
    assert "(default: 10 for i-blurry, si-blurry; 0 for hle)" in text
    assert "default 5;" not in text  # what it said before, wrong for ordered


def test_help_already_speaking_of_a_default_is_not_given_a_second():
    text = " ".join(subcommands()["replay"].format_help().split())
    assert "what a detected drift makes the learner do (default none)" in text
    assert "(default none) (default" not in text
