"""``streamcl serve --config FILE``: the long-lived daemon next to a Kafka topic (SPEC §6).

Logs are JSON lines on stderr (``--log-format console`` for people); ``/metrics`` and
``/healthz`` are served on ``metrics.host:metrics.port``. SIGTERM and SIGINT finish the current
batch, write a checkpoint and exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
from types import FrameType

from stream.daemon.checkpoint_key import load_checkpoint_key
from stream.daemon.config import load_serve_config, resolve_kafka_secrets
from stream.daemon.endpoint_security import endpoint_limits, endpoint_security
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
    config = resolve_kafka_secrets(load_serve_config(args.config), os.environ)
    key = load_checkpoint_key(config.checkpoint.key_file, os.environ)
    metrics = config.metrics
    security = endpoint_security(metrics, os.environ) if metrics.port is not None else None
    daemon = Daemon(config, checkpoint_key=key)
    server = None
    if metrics.port is not None:
        try:
            server = start_metrics_server(
                daemon.telemetry,
                metrics.host,
                metrics.port,
                metrics.stall_seconds,
                endpoint_limits(metrics),
                security,
            )
        except BaseException:
            daemon.close()
            raise

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
