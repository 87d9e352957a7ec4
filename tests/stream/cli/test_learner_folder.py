"""The folder a learner's run writes to by default: one name for ``replay`` and ``demo``, and
the one their help gives."""

import json
import re

from stream.cli.main import build_parser, main
from stream.runs.demo import run_demo
from stream.runs.recorded_run import learner_folder

RIVER = "river:naive_bayes.GaussianNB"


def test_a_colon_becomes_an_underscore():
    assert learner_folder("river:tree.HoeffdingTreeClassifier") == (
        "river_tree.HoeffdingTreeClassifier"
    )
    assert learner_folder("aef-ocl") == "aef-ocl"


def test_replay_and_demo_write_a_river_learner_to_the_same_folder_name(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["schedule", "disjoint", "--dataset", "digits", "--tasks", "2", "--out", "s.scl"]) == 0
    )
    assert main(["replay", "s.scl", "--learner", RIVER]) == 0
    replayed = tmp_path / "runs" / learner_folder(RIVER) / "results.json"
    assert json.loads(replayed.read_text())["learner"] == RIVER
    assert f"results in {replayed.relative_to(tmp_path)}" in capsys.readouterr().out

    run_demo(tmp_path / "demo", [RIVER], device="cpu", progress=False)
    assert (tmp_path / "demo" / learner_folder(RIVER) / "results.json").is_file()
    assert not any(":" in p.name for p in tmp_path.rglob("*"))


def test_the_help_says_where_the_runs_go():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    replay_help = " ".join(commands["replay"].format_help().split())
    assert "runs/river_tree.HoeffdingTreeClassifier" in replay_help
    assert re.search(r"each ':' in the name as '_'", replay_help)
    demo_help = " ".join(commands["demo"].format_help().split())
    assert "a folder of its name in it, each ':' as '_'" in demo_help
