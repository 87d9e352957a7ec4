"""``streamcl serve --config FILE``: the long-lived daemon next to a Kafka topic (SPEC §6).

Logs are JSON lines on stderr (``--log-format console`` for people); ``/metrics`` and
``/healthz`` are served on ``metrics.host:metrics.port``. SIGTERM and SIGINT finish the current
batch, write a checkpoint and exit 0.
"""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from stream.daemon.config import load_serve_config
from stream.daemon.predict_http import predict_routes
from stream.daemon.serve import Daemon
from stream.observe.http_endpoint import start_metrics_server


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="the daemon: learn from a Kafka topic, checkpoint, export metrics",
        description="Consume a Kafka topic in a consumer group and learn every valid message "
        "exactly once, with checkpoints, a dead-letter sink and Prometheus metrics "
        "(docs/daemon.md).",
    )
    parser.add_argument("--config", required=True, help="serve config, a TOML or JSON file")
    # JSON log lines unless asked otherwise: a daemon's stderr goes to a log collector.
    parser.set_defaults(run=run, log_format="json")


def run(args: argparse.Namespace) -> int:
    config = load_serve_config(args.config)
    daemon = Daemon(config)
    metrics = config.metrics
    server = None
    if metrics.port is not None:
        server = start_metrics_server(
            daemon.telemetry,
            metrics.host,
            metrics.port,
            metrics.stall_seconds,
            post_routes=predict_routes(daemon),
        )

    def stop(signum: int, frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        daemon.run()
    finally:
        if server is not None:
            server.stop()
    return 0
