"""``python -m bench``: the topics listed on ``--help`` (and with no argument); a topic's own
``--help`` still reaches that topic."""

import pytest

from bench.__main__ import main, topics


def test_help_lists_every_topic_on_a_line_of_its_own(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m bench" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == [*topics(), "all"]
    for line in out.splitlines():
        if line.startswith("  "):
            assert len(line.split()) > 1, f"{line!r} has no summary"
    # the analytic benchmark's options (what --help printed before) are not there
    assert "--widths" not in out


def test_no_argument_lists_the_topics_and_runs_nothing(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "== bench" not in captured.out
    assert all(f"  {t} " in captured.err for t in topics())


def test_a_topics_help_is_its_own(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analytic", "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m bench analytic" in capsys.readouterr().out


def test_options_before_any_topic_are_refused(capsys):
    assert main(["--threads", "1"]) == 2
    assert "after a topic" in capsys.readouterr().err


def test_unknown_topic_is_refused(capsys):
    assert main(["nope"]) == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err
