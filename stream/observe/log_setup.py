"""Structured logs for every streamcl command (structlog), as JSON lines or key=value lines.

One set of events, two renderings:

- ``json``: one JSON object per line (``timestamp``, ``level``, ``logger``, ``event`` and the
  event's fields), for the daemon, for log shippers and whenever stderr is not a terminal;
- ``console``: readable ``key=value`` lines, for a person at a terminal.

``auto`` (the default) picks ``console`` on a terminal and ``json`` otherwise; a command that
wants JSON everywhere (the daemon) sets ``parser.set_defaults(log_format="json")`` before
:func:`add_logging_arguments` runs. stdlib ``logging`` records (Kafka clients) and Python
warnings go through the same renderer, so stderr stays JSON lines throughout.

Context travels with ``structlog.contextvars``: what a caller binds, e.g. the daemon's
``bind_contextvars(topic=..., partition=..., offset=...)`` before a batch, is on every line
logged in that context, the event loop's included.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO, Any

import structlog

FORMATS = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")

_json_requested = False
# Marks the root handler configure_logging installed, so a second call replaces it.
_MARK = "streamcl_handler"


def resolve_format(log_format: str, stream: IO[str]) -> str:
    """``json`` or ``console`` for ``log_format`` written to ``stream``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    if log_format != "auto":
        return log_format
    return "console" if _isatty(stream) else "json"


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (test runners swap it)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


QUIET_LIBRARIES = ("faiss.loader", "matplotlib")
# kafka-python logs each bootstrap, connection and metadata update at info: some 40 lines for
# one `streamcl publish`. Heard from at warning, in full at `--log-level debug`. (librdkafka,
# the confluent client, logs to ``streamcl.kafka`` and says nothing at info unless its own
# ``debug`` option is set.)
CHATTY_CLIENTS = ("kafka",)


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: IO[str] | None = None
) -> str:
    """Send structlog and stdlib logging to ``stream`` (default stderr); returns the format used."""
    global _json_requested
    target = sys.stderr if stream is None else stream
    resolved = resolve_format(log_format, target)
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if resolved == "json":
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=_isatty(target))]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that announce themselves at info on import (faiss: "Loading faiss with AVX2
    # support"; matplotlib: "generated new fontManager" on a fresh machine) say nothing a user
    # acts on; their warnings still come through.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in CHATTY_CLIENTS:
        # at most as chatty as the root: --log-level error hides their warnings too
        quiet = max(logging.WARNING, root.level)
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else quiet)
    logging.captureWarnings(True)
    _json_requested = log_format == "json"
    return resolved


def report_failure(message: str) -> None:
    """The one line a failing command ends with: a JSON log line where JSON logs were asked
    for (``--log-format json``, or the daemon's default), else the plain line people read."""
    if _json_requested:
        structlog.get_logger("streamcl").error("command_failed", error=message)
    else:
        print(message, file=sys.stderr)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level`` on a (sub)command's parser."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=parser.get_default("log_format") or "auto",
        help="json lines, console key=value, or auto: console on a terminal, else json",
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default="info", help="least severe level logged"
    )
