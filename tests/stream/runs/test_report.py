"""stream/runs/report.py: comparison tables, per-level tables, loading and labelling results."""

from __future__ import annotations

import doctest
import json
import re

import pytest

from stream.runs import report
from stream.runs.report import (
    ReportError,
    format_level_table,
    format_table,
    label_runs,
    load_results,
)


def test_doctests():
    assert doctest.testmod(report).failed == 0


def test_table_in_percent_with_missing_values_as_dashes():
    table = format_table({"er": {"A_auc": 0.33838, "A_last": None, "samples_per_second": 1234.4}},
                         columns=("A_auc", "A_last", "samples_per_second"))  # fmt: skip
    assert table.splitlines() == [
        "| learner | A_auc | A_last | samples/s |",
        "|---------|-------|--------|-----------|",
        "| er      | 33.84 |      - |     1,234 |",
    ]


def test_level_table_lists_every_level_of_every_run():
    runs = {
        "nmc": {"per_level": {"coarse": {"A_auc": 0.9, "A_last": 0.8, "F_last": 0.1},
                              "fine": {"A_auc": 0.5, "A_last": 0.4, "F_last": None}}},
        "er": {"per_level": {"coarse": {"A_auc": 0.7, "A_last": 0.6, "F_last": 0.2}}},
    }  # fmt: skip
    lines = format_level_table(runs, columns=("A_auc", "F_last")).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "learner", "A_auc [coarse]", "F_last [coarse]", "A_auc [fine]", "F_last [fine]",
    ]  # fmt: skip
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "nmc",
        "90.00",
        "10.00",
        "50.00",
        "-",
    ]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["er", "70.00", "20.00", "-", "-"]
    assert format_level_table({"nmc": {"A_auc": 0.5}}) is None


def _write(path, **fields):
    result = {"learner": "nmc", "A_auc": 0.5, "curve": [[100, 0.5], [200, None]], **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def test_load_accepts_a_file_or_its_directory(tmp_path):
    path = _write(tmp_path / "run" / "results.json")
    assert load_results(path)["A_auc"] == 0.5
    assert load_results(tmp_path / "run")["path"] == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such results file"),
        ("{not json", "not a JSON results file"),
        ("[1, 2]", "holds one JSON object"),
        ('{"curve": []}', "no 'learner' name"),
        (
            '{"learner": "er", "A_auc": "high", "curve": []}',
            "'A_auc' must be a number in [0, 1] or null, got 'high'",
        ),
        (
            '{"learner": "er", "A_last": true, "curve": []}',
            "'A_last' must be a number in [0, 1] or null",
        ),
        (
            '{"learner": "er", "curve": [[1, 2, 3]]}',
            "'curve' must be a list of [samples_seen, accuracy] pairs",
        ),
        ('{"learner": "er"}', "'curve' must be a list"),
        ('{"learner": "er", "A_auc": 1' + "0" * 400 + ', "curve": []}', "'A_auc' must be a number"),
        ('{"learner": "er", "seed": 1' + "0" * 5000 + ', "curve": []}', "not a JSON results file"),
        ('{"learner": "er", "curve": [[1e308, 0.5], [-1e308, 0.5]]}', "'curve' must be a list"),
        ('{"learner": "er", "curve": [[10, 1e300]]}', "'curve' must be a list"),
        ('{"learner": "er", "per_level": {"fine": 5}, "curve": []}', "'per_level' must map"),
        (
            '{"learner": "er", "per_level": {"a": {"A_auc": "x"}}, "curve": []}',
            "per_level 'a': 'A_auc' must be a number in [0, 1] or null",
        ),
        ('{"learner": "er", "schedule_params": [1], "curve": []}', "'schedule_params' must be"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than a results file can be"),
        ('{"learner": "er", "A_auc": 5.0, "curve": []}', "'A_auc' must be a number in [0, 1]"),
        ('{"learner": "er", "A_avg": -0.1, "curve": []}', "'A_avg' must be a number in [0, 1]"),
        ('{"learner": "er", "prequential_accuracy": 1.5, "curve": []}', "in [0, 1] or null"),
        ('{"learner": "er", "F_last": -1.5, "curve": []}', "'F_last' must be a number in [-1, 1]"),
        (
            '{"learner": "er", "samples_per_second": -3, "curve": []}',
            "'samples_per_second' must be a number >= 0 or null, got -3",
        ),
        (
            '{"learner": "er", "per_level": {"a": {"A_last": 1.2}}, "curve": []}',
            "per_level 'a': 'A_last' must be a number in [0, 1] or null, got 1.2",
        ),
    ],
)
def test_load_refuses_what_it_cannot_report(tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as error:
        load_results(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_load_accepts_metrics_at_the_ends_of_their_ranges(tmp_path):
    path = _write(
        tmp_path / "results.json",
        A_auc=1, A_avg=0.0, A_last=0, F_last=-1.0, prequential_accuracy=1.0, samples_per_second=0,
        per_level={"fine": {"A_auc": 0, "A_last": 1, "F_last": 1}},
    )  # fmt: skip
    assert load_results(path)["F_last"] == -1.0


def _cells(line):
    """The cells of a markdown table row, split where a ``|`` is not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]


def test_text_from_files_stays_in_its_cell():
    runs = {"a|b\nc\r\x1b": {"A_auc": 0.5, "per_level": {"co|arse\u2028": {"A_auc": 0.5}}}}
    table = format_table(runs, columns=("A_auc",))
    levels = format_level_table(runs, columns=("A_auc",))
    assert table.splitlines()[2] == "| a\\|b c   | 50.00 |"
    assert [_cells(line) for line in levels.splitlines()] == [
        ["learner", "A_auc [co\\|arse ]"],
        ["-" * 10, "-" * 19],
        ["a\\|b c", "50.00"],
    ]


def test_labels_are_learners_made_distinct_by_directory_then_path(tmp_path):
    runs = [
        load_results(_write(tmp_path / "a" / "er-lr3" / "results.json", learner="er")),
        load_results(_write(tmp_path / "a" / "er-lr4" / "results.json", learner="er")),
        load_results(_write(tmp_path / "b" / "er-lr4" / "results.json", learner="er")),
        load_results(_write(tmp_path / "c" / "results.json", learner="nmc")),
    ]
    assert label_runs(runs) == [
        "er (er-lr3)", str(tmp_path / "a" / "er-lr4" / "results.json"),
        str(tmp_path / "b" / "er-lr4" / "results.json"), "nmc",
    ]  # fmt: skip


def test_a_learner_named_as_another_runs_path_still_gets_a_label_of_its_own(tmp_path):
    """The two ``er`` runs fall back to their paths, one of which is the third run's learner:
    the labels once repeated, and a report keyed by label dropped a run."""
    first = tmp_path / "a" / "x" / "results.json"
    runs = [
        load_results(_write(tmp_path / "c" / "results.json", learner=str(first))),
        load_results(_write(first, learner="er")),
        load_results(_write(tmp_path / "b" / "x" / "results.json", learner="er")),
    ]
    assert label_runs(runs) == [
        f"{first} ({tmp_path / 'c' / 'results.json'})",
        f"er ({first})",
        str(tmp_path / "b" / "x" / "results.json"),
    ]


def test_labels_are_on_one_line_and_stay_distinct(tmp_path):
    runs = [
        load_results(_write(tmp_path / "a" / "results.json", learner="x\ny")),
        load_results(_write(tmp_path / "b" / "results.json", learner="x y")),
    ]
    assert label_runs(runs) == ["x y (a)", "x y (b)"]


def test_runs_no_label_tells_apart_are_refused(tmp_path):
    path = _write(tmp_path / "results.json")
    with pytest.raises(ReportError, match="no label tells this run from another"):
        label_runs([load_results(path), load_results(path)])
