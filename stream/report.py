"""Comparison tables of run results (A_auc / A_last / F_last ...) for terminals and markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy", "samples_per_second")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "samples_per_second":
        return f"{value:,.0f}"
    return f"{100 * value:.2f}"


def format_table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A markdown table, one row per run; accuracies in percent."""
    header = ["learner", *[("samples/s" if c == "samples_per_second" else c) for c in columns]]
    rows = [[name, *[_cell(c, result.get(c)) for c in columns]] for name, result in results.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, *cells in rows:
        padded = [name.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)
