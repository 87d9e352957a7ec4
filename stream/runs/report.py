r"""Comparison tables of run results (A_auc / A_last / F_last ...) for terminals and markdown.

``load_results`` reads the ``results.json`` files that ``streamcl replay`` writes and checks the
fields a report uses; ``label_runs`` names each run after its learner (and its directory where
two runs share a learner); ``format_table`` is the table of pooled metrics and
``format_level_table`` the per-level one of hierarchical runs.

>>> print(format_table({"nmc": {"A_auc": 0.5, "A_last": 0.25}}, columns=("A_auc", "A_last")))
| learner | A_auc | A_last |
|---------|-------|--------|
| nmc     | 50.00 |  25.00 |

Text taken from a file (a learner, a level) is written on one line, its ``|`` escaped, so that
it cannot split a row:

>>> print(format_table({"a|b\nc": {"A_auc": 1.0}}, columns=("A_auc",)))
| learner | A_auc  |
|---------|--------|
| a\|b c  | 100.00 |
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.data.regular_file import read_regular

COLUMNS = ("A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy", "samples_per_second")
LEVEL_COLUMNS = ("A_auc", "A_last", "F_last")
# [low, high] of each metric: the accuracies are fractions, F_last is a difference of two of them
BOUNDS = {
    "A_auc": (0.0, 1.0),
    "A_avg": (0.0, 1.0),
    "A_last": (0.0, 1.0),
    "F_last": (-1.0, 1.0),
    "prequential_accuracy": (0.0, 1.0),
    "samples_per_second": (0.0, math.inf),
}
# A results file holds a run's curves and accuracy matrices: kilobytes to a few megabytes.
MAX_RESULTS_BYTES = 256 << 20


class ReportError(ValueError):
    """A results file that cannot be reported (missing, not JSON, or without the needed fields)."""


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "samples_per_second":
        return f"{value:,.0f}"
    return f"{100 * value:.2f}"


def _one_line(text: str) -> str:
    """``text`` with each control character, line separator and lone surrogate as a space."""
    return "".join(" " if unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} else c for c in text)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    header, rows = _escaped(header), [_escaped(row) for row in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, *cells in rows:
        padded = [name.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def _escaped(cells: Sequence[str]) -> list[str]:
    # an unescaped | would end the cell, a newline the row
    return [_one_line(cell).replace("|", "\\|") for cell in cells]


def format_table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A markdown table, one row per run; accuracies in percent."""
    header = ["learner", *[("samples/s" if c == "samples_per_second" else c) for c in columns]]
    rows = [[name, *[_cell(c, result.get(c)) for c in columns]] for name, result in results.items()]
    return _markdown(header, rows)


def format_level_table(
    results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = LEVEL_COLUMNS
) -> str | None:
    """Per hierarchy level, ``columns`` of each run that has ``per_level``; ``None`` if none has."""
    levels: list[str] = []
    for result in results.values():
        for level in result.get("per_level") or {}:
            if level not in levels:
                levels.append(level)
    if not levels:
        return None
    header = ["learner", *[f"{column} [{level}]" for level in levels for column in columns]]
    rows = []
    for name, result in results.items():
        per_level = result.get("per_level") or {}
        rows.append(
            [
                name,
                *[_cell(c, per_level.get(level, {}).get(c)) for level in levels for c in columns],
            ]
        )
    return _markdown(header, rows)


def describe_stream(result: Mapping[str, Any]) -> str:
    """``dataset, schedule (params), seed S`` of a run."""
    params = result.get("schedule_params") or {}
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    return _one_line(
        f"{result.get('dataset')}, {result.get('schedule')} ({shown}), seed {result.get('seed')}"
    )


# a curve's x is a sample count: beyond 2**53 a float no longer tells samples apart
MAX_SAMPLES = 2**53


def _is_number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """None, or a finite int or float (not a bool) within ``[low, high]``."""
    if value is None:
        return True
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and low <= value <= high  # an int past floats raises
    except OverflowError:
        return False


def _check_metrics(result: Mapping[str, Any], columns: Sequence[str], where: str) -> None:
    for key in columns:
        low, high = BOUNDS[key]
        if not _is_number(result.get(key), low, high):
            within = f"in [{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
            raise ReportError(
                f"{where}: {key!r} must be a number {within} or null, got {result.get(key)!r}"
            )


def load_results(path: str | Path) -> dict[str, Any]:
    """The results of one run: ``path`` is a ``results.json`` or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        raw = read_regular(path, MAX_RESULTS_BYTES)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    try:
        result = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 4300+ digits
        raise ReportError(f"{path}: not a JSON results file ({exc})") from None
    except RecursionError:
        raise ReportError(f"{path}: nested deeper than a results file can be") from None
    if not isinstance(result, dict):
        raise ReportError(f"{path}: a results file holds one JSON object")
    if not isinstance(result.get("learner"), str):
        raise ReportError(f"{path}: no 'learner' name (is it a results.json from streamcl replay?)")
    _check_metrics(result, COLUMNS, str(path))
    per_level = result.get("per_level")
    if per_level is not None:
        if not isinstance(per_level, dict) or not all(
            isinstance(v, dict) for v in per_level.values()
        ):
            raise ReportError(f"{path}: 'per_level' must map each level to its metrics")
        for level, metrics in per_level.items():
            _check_metrics(metrics, LEVEL_COLUMNS, f"{path}: per_level {level!r}")
    if not isinstance(result.get("schedule_params") or {}, dict):
        raise ReportError(f"{path}: 'schedule_params' must be an object")
    curve = result.get("curve")
    if not isinstance(curve, list) or not all(
        isinstance(p, list)
        and len(p) == 2
        and p[0] is not None
        and _is_number(p[0], 0, MAX_SAMPLES)
        and _is_number(p[1], 0, 1)
        for p in curve
    ):
        raise ReportError(
            f"{path}: 'curve' must be a list of [samples_seen, accuracy] pairs "
            f"(0 <= samples_seen <= 2**53, accuracy in [0, 1] or null)"
        )
    result["path"] = str(path)
    return result


def label_runs(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """A distinct label per run, on one line: its learner, with its directory where learners
    repeat, its path where those repeat too, and its learner and path where a path is another
    run's label. Raises ``ReportError`` if even that leaves two runs with one label."""
    labels = [_one_line(str(r["learner"])) for r in results]
    for attempt in (
        lambda r: f"{r['learner']} ({Path(r['path']).parent.name})",
        lambda r: r["path"],
        lambda r: f"{r['learner']} ({r['path']})",
    ):
        repeated = _repeated(labels)
        if not repeated:
            break
        labels = [
            _one_line(attempt(r)) if label in repeated else label
            for r, label in zip(results, labels, strict=True)
        ]
    if repeated := _repeated(labels):
        path = next(
            r["path"] for r, label in zip(results, labels, strict=True) if label in repeated
        )
        raise ReportError(f"{path}: no label tells this run from another: {min(repeated)!r}")
    return labels


def _repeated(labels: Sequence[str]) -> set[str]:
    return {label for label in labels if labels.count(label) > 1}
