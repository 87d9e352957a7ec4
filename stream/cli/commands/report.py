"""``streamcl report``: compare several runs' results.json as a markdown table and one plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.errors import UsageError
from stream.cli.output_path import writable_directory
from stream.runs.plots import plot_curves
from stream.runs.report import (
    ReportError,
    describe_stream,
    format_level_table,
    format_table,
    label_runs,
    load_results,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="compare runs: a markdown table and one plot of their anytime-accuracy curves",
        description="Compare the results.json of several replays: print a markdown table "
        "(accuracies in %) and write it with a plot of every run's anytime-accuracy curve.",
    )
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS", help="results.json files or run directories"
    )
    parser.add_argument("--out", default="streamcl-report", help="where table.md and curves.png go")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    runs = [load_results(path) for path in args.results]
    seen: set[Path] = set()
    for result in runs:
        resolved = Path(result["path"]).resolve()
        if resolved in seen:
            raise ReportError(f"{result['path']}: given twice")
        seen.add(resolved)
    by_label = dict(zip(label_runs(runs), runs, strict=True))
    out = _output_directory(args.out)
    streams = {describe_stream(r) for r in runs}
    one_stream = len(streams) == 1
    lines = []
    if one_stream:
        lines.append(f"{describe_stream(runs[0])} — accuracies in %")
    else:
        lines.append("runs on different streams — accuracies in %; streams:")
        lines += [f"- {label}: {describe_stream(r)}" for label, r in by_label.items()]
    lines += ["", format_table(by_label)]
    level_table = format_level_table(by_label)
    if level_table is not None:
        lines += ["", "per hierarchy level:", "", level_table]
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    first = runs[0]
    stream = f"{first.get('dataset')}, {first.get('schedule')}, seed {first.get('seed')}"
    title = f"Anytime accuracy: {stream}" if one_stream else "Anytime accuracy (different streams)"
    plot_curves(
        {label: r["curve"] for label, r in by_label.items()}, out / "curves.png", title=title
    )
    print(f"table in {out / 'table.md'}, curves in {out / 'curves.png'}")
    return 0


def _output_directory(path: str) -> Path:
    """``--out``, checked before anything is printed or written: a directory named
    ``table.md`` or ``curves.png`` there would fail the report half-written."""
    out = writable_directory(path)
    for name in ("table.md", "curves.png"):
        if (out / name).is_dir():
            raise UsageError(f"--out {out}: {name} there is a directory; remove it or name another")
    return out
