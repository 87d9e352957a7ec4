"""``streamcl serve --config FILE``: the long-lived daemon next to a Kafka topic (SPEC §6).

Logs are JSON lines on stderr; ``/metrics`` is served on ``metrics.address``. SIGTERM and
SIGINT finish the current batch, write a checkpoint and exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import structlog
from prometheus_client import start_http_server

from stream.daemon.config import load_serve_config
from stream.daemon.serve import Daemon
from stream.errors import UsageError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="the daemon: learn from a Kafka topic, checkpoint, export metrics",
        description="Consume a Kafka topic in a consumer group and learn every valid message "
        "exactly once, with checkpoints, a dead-letter sink and Prometheus metrics "
        "(docs/daemon.md).",
    )
    parser.add_argument("--config", required=True, help="serve config, a TOML or JSON file")
    parser.set_defaults(run=run)


def _json_logs() -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"metrics.address must be HOST:PORT, got {address!r}")
    return host or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    config = load_serve_config(args.config)
    _json_logs()
    daemon = Daemon(config)
    server = None
    if config.metrics.address is not None:
        host, port = _address(config.metrics.address)
        try:
            server, _ = start_http_server(port, host, registry=daemon.telemetry.registry)
        except OSError as exc:
            raise UsageError(f"metrics.address {config.metrics.address}: {exc.strerror}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        daemon.run()
    finally:
        if server is not None:
            server.shutdown()
    return 0
