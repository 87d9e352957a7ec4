"""``streamcl demo``: the embedded default run (digits, Si-Blurry, several learners)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from learners import registry
from stream.cli.errors import UsageError
from stream.cli.output_path import writable_directory
from stream.observe.log_setup import configure_logging
from stream.runs.daemon_demo import run_daemon_demo
from stream.runs.demo import LEARNERS, run_demo
from stream.runs.report import format_table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run the embedded demo: digits, Si-Blurry, several learners; table + plot"
    )
    parser.add_argument(
        "--out",
        default="streamcl-demo",
        help="output directory; each learner's results go to a folder of its name in it, each "
        "':' as '_'",
    )
    parser.add_argument(
        "--learners",
        default=",".join(LEARNERS),
        help=f"comma-separated (default {','.join(LEARNERS)})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="instead: the whole deployment — bundled broker, digits with labels arriving late, "
        "`serve` with live figures each second, one POST /predict — in under a minute",
    )
    parser.add_argument(
        "--label-delay",
        type=int,
        default=200,
        metavar="N",
        help="with --daemon: labels arrive N samples after their samples (default 200)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    writable_directory(args.out)
    if args.daemon:
        return _run_daemon(args)
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
        f"per-learner results in {out}/<learner>/results.json, ':' in a name as '_' "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


def _run_daemon(args: argparse.Namespace) -> int:
    if args.label_delay < 0:
        raise UsageError(f"--label-delay must be >= 0 samples, got {args.label_delay}")
    if args.log_level == "info":
        # The live lines are the demo's output; the daemon's own logs would bury them.
        configure_logging(args.log_format, "warning")
    run_daemon_demo(args.out, label_delay=args.label_delay)
    return 0
