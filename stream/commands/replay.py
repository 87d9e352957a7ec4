"""``streamcl replay``: run one learner over a recorded stream and write results.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from learners.drift import DriftAction
from learners.registry import describe_validation_error
from stream.config_file import load_config_file
from stream.drift import DriftConfig
from stream.errors import UsageError
from stream.event_loop import LoopConfig
from stream.progress import ProgressBar
from stream.replay import prepare, replay
from stream.report import format_table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay",
        help="replay a recorded stream through a learner",
        description="Replay a recorded stream through a learner and write results.json and curve.png.",
    )
    parser.add_argument("stream", help="a stream file written by `streamcl schedule`")
    parser.add_argument("--learner", required=True, help="learner name (see `streamcl learners`)")
    parser.add_argument("--config", help="learner options, a JSON or TOML file")
    parser.add_argument("--eval-period", type=int, default=1000, help="evaluate every N samples (0: task ends only)")
    parser.add_argument("--batch-size", type=int, default=16, help="stream samples per micro-batch")
    parser.add_argument("--online-iter", type=float, default=1.0, help="update steps per micro-batch")
    parser.add_argument(
        "--prequential-window", type=int, action="append", metavar="N",
        help="rolling prequential accuracy window (repeat for several; default 1000)",
    )
    parser.add_argument(
        "--drift", metavar="DETECTOR",
        help="detect drift on prequential errors with a river.drift detector (e.g. ADWIN)",
    )
    parser.add_argument(
        "--drift-action", default="none", choices=[a.value for a in DriftAction],
        help="what a detected drift makes the learner do (default none)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<learner>)")
    parser.set_defaults(run=run)


def loop_config(args: argparse.Namespace) -> LoopConfig:
    if args.drift is None and args.drift_action != DriftAction.NONE:
        raise UsageError("--drift-action needs --drift DETECTOR")
    try:
        return LoopConfig(
            batch_size=args.batch_size,
            online_iter=args.online_iter,
            eval_period=args.eval_period or None,
            prequential_windows=args.prequential_window or [1000],
            drift=None if args.drift is None else drift_config(args),
        )
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "loop options")) from None


def drift_config(args: argparse.Namespace) -> DriftConfig:
    return DriftConfig(detector=args.drift, action=DriftAction(args.drift_action))


def run(args: argparse.Namespace) -> int:
    options = load_config_file(args.config) if args.config else {}
    config = loop_config(args)
    prepared = prepare(args.stream)
    out = Path(args.out) if args.out else Path("runs") / args.learner.replace(":", "_")
    bar = ProgressBar(len(prepared.stream), args.learner)
    results = replay(prepared, args.learner, options, config, args.device, out, observers=[bar])
    print(format_table({args.learner: results}))
    print(f"results in {out / 'results.json'}")
    return 0
