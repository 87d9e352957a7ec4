"""stream/commands/report.py: `streamcl report` over real replays' results.json."""

from __future__ import annotations

import json

import pytest

from stream.cli.main import main
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import prepare, replay
from tests.support.digits_stream import write_digits_stream
from tests.support.logging_state import restore_logging  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real nmc replays of a digits Si-Blurry stream, evaluated at different periods."""
    tmp = tmp_path_factory.mktemp("report")
    write_digits_stream(tmp / "digits.scl")
    prepared = prepare(tmp / "digits.scl")
    for period in (200, 400):
        replay(prepared, "nmc", {}, LoopConfig(eval_period=period), "cpu", tmp / f"nmc-{period}")
    return tmp


def test_table_and_plot_of_several_runs(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        ["report", str(runs / "nmc-200"), str(runs / "nmc-400" / "results.json"), "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    results = {
        p: json.loads((runs / p / "results.json").read_text()) for p in ("nmc-200", "nmc-400")
    }
    lines = stdout.splitlines()
    assert (
        lines[0].startswith("digits, si-blurry (tasks=5 disjoint=50 blurry=10")
        and "seed 1" in lines[0]
    )
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| nmc")}
    assert set(rows) == {"nmc (nmc-200)", "nmc (nmc-400)"}
    for name, result in results.items():
        cells = [c.strip() for c in rows[f"nmc ({name})"].strip("|").split("|")]
        assert (
            cells[1] == f"{100 * result['A_auc']:.2f}"
            and cells[3] == f"{100 * result['A_last']:.2f}"
        )
    assert (out / "table.md").read_text() == "\n".join(lines[:-1]) + "\n"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per hierarchy level" not in stdout


def test_runs_on_different_streams_are_flagged(runs, tmp_path, capsys):
    other = json.loads((runs / "nmc-200" / "results.json").read_text())
    other["seed"] = 2
    (tmp_path / "seed2").mkdir()
    (tmp_path / "seed2" / "results.json").write_text(json.dumps(other))
    assert (
        main(
            ["report", str(runs / "nmc-400"), str(tmp_path / "seed2"), "--out", str(tmp_path / "r")]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert stdout.startswith("runs on different streams")
    assert "- nmc (seed2): digits, si-blurry" in stdout and "seed 2" in stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing"], "missing/results.json: no such results file"),
        (["nmc-200", "nmc-200/results.json"], "nmc-200/results.json: given twice"),
    ],
)
def test_bad_results_are_one_line_exit_2(runs, tmp_path, capsys, arguments, message):
    (runs / "missing").mkdir(exist_ok=True)
    code = main(["report", *[str(runs / a) for a in arguments], "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("streamcl: error: ") and err.rstrip().endswith(message)
    assert not (tmp_path / "r").exists()


def test_a_metric_out_of_its_range_is_one_line_exit_2(runs, tmp_path, capsys):
    result = json.loads((runs / "nmc-200" / "results.json").read_text())
    result["A_auc"] = 5.0
    (tmp_path / "results.json").write_text(json.dumps(result))
    code = main(["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.splitlines()) == 1
    assert f"{tmp_path / 'results.json'}: 'A_auc' must be a number in [0, 1]" in captured.err
    assert not (tmp_path / "r").exists()


def test_three_runs_with_colliding_labels_each_get_a_row(runs, tmp_path, capsys):
    """Two runs of one learner in directories of one name fall back to their paths; a third
    run's learner is named as one of those paths: every run keeps its row and its curve."""
    result = json.loads((runs / "nmc-200" / "results.json").read_text())
    first = tmp_path / "a" / "x" / "results.json"
    for path, learner in (
        (tmp_path / "c" / "results.json", str(first)),
        (first, "nmc"),
        (tmp_path / "b" / "x" / "results.json", "nmc"),
    ):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**result, "learner": learner}))
    out = tmp_path / "r"
    arguments = [str(tmp_path / d) for d in ("c", "a/x", "b/x")]
    assert main(["report", *arguments, "--out", str(out)]) == 0
    table = (out / "table.md").read_text().splitlines()
    assert len([line for line in table if line.startswith("| ")]) == 1 + 3


@pytest.mark.parametrize("name", ["table.md", "curves.png"])
def test_an_output_that_is_a_directory_is_refused_before_anything_is_written(
    runs, tmp_path, capsys, name
):
    (tmp_path / "r" / name).mkdir(parents=True)
    code = main(["report", str(runs / "nmc-200"), "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.splitlines()) == 1
    assert f"--out {tmp_path / 'r'}: {name} there is a directory" in captured.err
    assert [p.name for p in (tmp_path / "r").iterdir()] == [name]


def test_an_unwritable_out_is_refused_before_the_table_is_printed(runs, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code = main(["report", str(runs / "nmc-200"), "--out", str(tmp_path / "file")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "cannot write there" in captured.err
