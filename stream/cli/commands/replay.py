"""``streamcl replay``: run one learner over a recorded stream and write results.json."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from tqdm.contrib.logging import logging_redirect_tqdm

from learners import registry
from learners.capabilities import DriftAction
from learners.registry import LearnerConfigError, describe_validation_error
from stream.cli.config_file import load_config_file
from stream.cli.errors import UsageError
from stream.cli.output_path import writable_directory
from stream.data.label_delay import chosen_label_delay
from stream.data.option_value import option_value
from stream.engine.device import resolve_device
from stream.engine.drift_detection import DriftConfig
from stream.engine.event_loop import LoopConfig, Observer
from stream.observe.http_endpoint import (
    DEFAULT_HOST,
    DEFAULT_STALL_SECONDS,
    MetricsServer,
    start_metrics_server,
)
from stream.observe.log_setup import resolve_format
from stream.observe.loop_log import LoopLogger
from stream.observe.pacing import Pacer
from stream.observe.progress import ProgressBar
from stream.observe.telemetry import Telemetry
from stream.runs.recorded_run import learner_folder, prepare, replay
from stream.runs.report import format_table

log = structlog.get_logger("streamcl.replay")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay",
        help="replay a recorded stream through a learner",
        description="Replay a recorded stream through a learner and write results.json and "
        "curve.png; optionally serve Prometheus metrics while it runs.",
    )
    parser.add_argument("stream", help="a stream file written by `streamcl schedule`")
    parser.add_argument("--learner", required=True, help="learner name (see `streamcl learners`)")
    parser.add_argument("--config", help="learner options, a JSON or TOML file")
    parser.add_argument(
        "--eval-period",
        type=int,
        default=1000,
        help="evaluate every N samples, 0 for at task ends only",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="stream samples per micro-batch")
    parser.add_argument(
        "--online-iter", type=float, default=1.0, help="update steps per micro-batch"
    )
    parser.add_argument(
        "--prequential-window",
        type=int,
        action="append",
        metavar="N",
        help="rolling prequential accuracy window (repeat for several; default 1000)",
    )
    parser.add_argument(
        "--drift",
        metavar="DETECTOR",
        help="detect drift on prequential errors with a river.drift detector (e.g. ADWIN)",
    )
    parser.add_argument(
        "--drift-action",
        default="none",
        choices=[a.value for a in DriftAction],
        help="what a detected drift makes the learner do (default none)",
    )
    parser.add_argument(
        "--drift-direction",
        default=None,
        choices=["increase", "any"],
        help="count rises of the error rate only (default increase), or any change: "
        "two-sided detectors with no error estimate (KSWIN) need any",
    )
    parser.add_argument(
        "--drift-param",
        action="append",
        metavar="NAME=VALUE",
        help="a constructor argument of the detector, VALUE read as JSON where it parses, else "
        "as text (repeat for several; e.g. --drift PageHinkley --drift-param mode=up)",
    )
    parser.add_argument(
        "--label-delay",
        default=None,
        metavar="DELAY",
        help="labels arrive late (N samples, uniform:A-B or exponential:MEAN), each sample "
        "predicted first, as `streamcl serve` sees them (default: the stream's own, else none)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/LEARNER, each ':' in the name as '_', e.g. "
        "runs/river_tree.HoeffdingTreeClassifier)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=None,
        metavar="R",
        help="replay at most R samples per second (to watch a run live)",
    )
    metrics = parser.add_argument_group(
        "metrics", "Prometheus /metrics and /healthz while replaying"
    )
    metrics.add_argument(
        "--metrics-port", type=int, default=None, metavar="P", help="serve metrics on port P"
    )
    metrics.add_argument(
        "--metrics-host",
        default=None,
        metavar="H",
        help=f"address to serve them on (default {DEFAULT_HOST})",
    )
    metrics.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="S",
        help="keep serving S seconds after the replay, so a scrape catches the final values "
        "(SIGTERM or Ctrl-C ends it early)",
    )
    metrics.add_argument(
        "--health-stall",
        type=float,
        default=None,
        metavar="S",
        help="/healthz fails once the loop has not progressed for S seconds "
        f"(default {DEFAULT_STALL_SECONDS:g}; must exceed the slowest update or evaluation)",
    )
    parser.set_defaults(run=run)


def loop_config(args: argparse.Namespace) -> LoopConfig:
    if args.drift is None:
        for flag, given in (
            ("--drift-action", args.drift_action != DriftAction.NONE),
            ("--drift-direction", args.drift_direction is not None),
            ("--drift-param", bool(args.drift_param)),
        ):
            if given:
                raise UsageError(f"{flag} needs --drift DETECTOR")
    try:
        drift = None if args.drift is None else drift_config(args)
    except ValidationError as exc:
        where = "--drift options (--drift-direction, --drift-param NAME=VALUE)"
        raise UsageError(describe_validation_error(exc, where)) from None
    try:
        return LoopConfig(
            batch_size=args.batch_size,
            online_iter=args.online_iter,
            eval_period=args.eval_period or None,
            prequential_windows=args.prequential_window or [1000],
            drift=drift,
        )
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "options", _FLAGS)) from None


# LoopConfig's fields as the command line names them
_FLAGS = {
    "batch_size": "--batch-size",
    "online_iter": "--online-iter",
    "eval_period": "--eval-period",
    "prequential_windows": "--prequential-window",
}


def drift_config(args: argparse.Namespace) -> DriftConfig:
    return DriftConfig(
        detector=args.drift,
        params=drift_params(args.drift_param or []),
        action=DriftAction(args.drift_action),
        direction=args.drift_direction or "increase",
    )


def drift_params(given: list[str]) -> dict[str, Any]:
    """``--drift-param NAME=VALUE`` flags as the detector's keyword arguments."""
    params: dict[str, Any] = {}
    for item in given:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--drift-param: expected NAME=VALUE, got {item[:80]!r}")
        if name in params:
            raise UsageError(f"--drift-param: {name} given twice")
        params[name] = option_value(text)  # NaN and inf: refused by DriftConfig
    return params


def _check_metrics_options(args: argparse.Namespace) -> None:
    if args.metrics_port is None:
        for flag, value in (
            ("--metrics-host", args.metrics_host),
            ("--metrics-linger", args.metrics_linger),
            ("--health-stall", args.health_stall is not None),
        ):
            if value:
                raise UsageError(f"{flag} needs --metrics-port")
    if args.health_stall is not None and not 0 < args.health_stall < math.inf:  # NaN fails
        raise UsageError(f"--health-stall must be > 0 seconds, got {args.health_stall:g}")
    # written so that NaN fails too (every comparison with NaN is false)
    if not 0 <= args.metrics_linger <= threading.TIMEOUT_MAX:  # a wait beyond it overflows
        raise UsageError(
            f"--metrics-linger must be 0 to {threading.TIMEOUT_MAX:g} seconds, "
            f"got {args.metrics_linger:g}"
        )
    if args.max_rate is not None and not 0 < args.max_rate < math.inf:
        raise UsageError(f"--max-rate must be > 0 samples/s, got {args.max_rate:g}")


def run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before the first log line or any server, so
    # bad input is one line.
    _check_metrics_options(args)
    options = load_config_file(args.config) if args.config else {}
    config = loop_config(args)
    try:
        learner_config = registry.validate_config(args.learner, options)
    except LearnerConfigError as exc:
        if not args.config:
            raise
        raise LearnerConfigError(f"{args.config}: {exc}") from None
    resolve_device(args.device)
    prepared = prepare(args.stream)
    label_delay = chosen_label_delay(
        args.label_delay, prepared.stream.header.label_delay, args.stream
    )
    out = writable_directory(
        Path(args.out) if args.out else Path("runs") / learner_folder(args.learner)
    )
    bar_enabled = None if resolve_format(args.log_format, sys.stderr) == "console" else False
    observers: list[Observer] = [
        LoopLogger(args.learner),
        ProgressBar(len(prepared.stream), args.learner, enabled=bar_enabled),
    ]
    if args.max_rate is not None:
        observers.append(Pacer(args.max_rate))
    server: MetricsServer | None = None
    with structlog.contextvars.bound_contextvars(learner=args.learner):
        if args.metrics_port is not None:
            telemetry = Telemetry()
            observers.append(telemetry.observer(args.learner))
            server = start_metrics_server(
                telemetry,
                args.metrics_host or DEFAULT_HOST,
                args.metrics_port,
                DEFAULT_STALL_SECONDS if args.health_stall is None else args.health_stall,
            )
        try:
            log.info("replay_started", stream=args.stream, events=len(prepared.stream))
            # Log lines on a terminal go above the progress bar rather than through it.
            with logging_redirect_tqdm() if bar_enabled is None else nullcontext():
                results = replay(
                    prepared,
                    args.learner,
                    learner_config,
                    config,
                    args.device,
                    out,
                    observers,
                    label_delay=label_delay,
                )
            print(format_table({args.learner: results}), flush=True)
            print(f"results in {out / 'results.json'}", flush=True)
            log.info("results_written", samples=results["samples"], path=str(out / "results.json"))
            if server is not None and args.metrics_linger > 0:
                log.info("metrics_linger", url=server.url, seconds=args.metrics_linger)
                _linger(args.metrics_linger)
        finally:
            if server is not None:
                server.stop()
    return 0


def _linger(seconds: float) -> None:
    """Wait ``seconds``, or until SIGTERM or Ctrl-C: the results are written either way."""
    done = threading.Event()
    with _signals_set(done, signal.SIGTERM, signal.SIGINT):
        done.wait(seconds)


@contextmanager
def _signals_set(event: threading.Event, *signals: signal.Signals) -> Iterator[None]:
    previous = {s: signal.signal(s, lambda *_: event.set()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
