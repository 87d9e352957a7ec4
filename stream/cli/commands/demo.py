"""``streamcl demo``: the embedded default run (digits, Si-Blurry, several learners)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from learners import registry
from stream.runs.demo import LEARNERS, run_demo
from stream.runs.report import format_table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run the embedded demo: digits, Si-Blurry, several learners; table + plot"
    )
    parser.add_argument("--out", default="streamcl-demo", help="output directory")
    parser.add_argument(
        "--learners",
        default=",".join(LEARNERS),
        help=f"comma-separated (default {','.join(LEARNERS)})",
    )
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.learners.split(",") if n.strip()]
    for name in names:
        registry.get(name)
    started = time.perf_counter()
    results = run_demo(args.out, names, args.device)
    out = Path(args.out)
    print("digits, Si-Blurry (T=5, N=50, M=10), seed 1 — accuracies in %")
    print(format_table(results))
    print(
        f"curves in {out / 'curve.png'}, table in {out / 'table.md'}, "
        f"per-learner results in {out}/<learner>/results.json ({time.perf_counter() - started:.1f} s)"
    )
    return 0
