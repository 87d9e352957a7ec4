"""stream/runs/report.py: comparison tables, per-level tables, loading and labelling results."""

from __future__ import annotations

import doctest
import json

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
            "'A_auc' must be a number or null, got 'high'",
        ),
        ('{"learner": "er", "A_last": true, "curve": []}', "'A_last' must be a number or null"),
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
            "per_level 'a': 'A_auc' must be a number or null",
        ),
        ('{"learner": "er", "schedule_params": [1], "curve": []}', "'schedule_params' must be"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than a results file can be"),
    ],
)
def test_load_refuses_what_it_cannot_report(tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as error:
        load_results(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


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
