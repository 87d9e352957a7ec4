"""The ``streamcl`` command line (README, "Command line").

Exit codes: 0 success; 2 bad usage or bad config, with one line that says what and where
(a path too long for the file system included), or, with no command at all, the usage and the
list of commands; 1 any other failure; 141 (as a shell's SIGPIPE) when the reader of the
output went away (``streamcl learners | head -1``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from stream.cli.errors import USER_ERRORS, UsageError, note_refusal
from stream.observe.log_setup import add_logging_arguments, configure_logging, report_failure

# Each module adds one subcommand with ``add_parser(subparsers)``; add a command with one line.
COMMANDS = (
    "stream.cli.commands.demo",
    "stream.cli.commands.schedule",
    "stream.cli.commands.replay",
    "stream.cli.commands.report",
    "stream.cli.commands.learners",
    "stream.cli.commands.publish",
    "stream.cli.commands.serve",
    "stream.cli.commands.predict",
    "stream.cli.commands.export",
    "stream.cli.commands.pretrain",
)


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's text with its default, "(default: X)", unless the text
    already speaks of a default or there is none to show (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help, action.default
        if (
            not text
            or "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, list | tuple) and not default)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (exit 2) instead of usage + message, and
    whose help shows every option's default (one formatter for every subcommand)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # main prefixes "streamcl: error: "; a subcommand's error names the subcommand only
        # (its prog is "streamcl replay"), so the line does not say streamcl twice
        command = self.prog.partition(" ")[2]
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamcl", description="Streaming online continual learning.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for module in COMMANDS:
        importlib.import_module(module).add_parser(commands)
    for command in commands.choices.values():
        add_logging_arguments(command)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamcl")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        if not argv:
            # no command: the usage and the list of commands, not just "required: COMMAND"
            parser.print_help(sys.stderr)
            return 2
        args = parser.parse_args(argv)
        configure_logging(args.log_format, args.log_level)
        return int(args.run(args))
    except USER_ERRORS as exc:
        report_failure(f"streamcl: error: {exc}")
        note_refusal(str(exc))
        return 2
    except KeyboardInterrupt:
        report_failure("streamcl: interrupted")
        return 130
    except BrokenPipeError:
        # the rest of the output has no reader: send it nowhere, so exiting flushes nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            report_failure(f"streamcl: error: {exc.filename}: path too long for the file system")
            return 2
        report_failure(f"streamcl: failed: {type(exc).__name__}: {exc}")
        return 1
    except Exception as exc:
        report_failure(f"streamcl: failed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
