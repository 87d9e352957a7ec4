"""Where a command writes: checked before any work, so a path that cannot be written is one
usage error (exit 2) instead of a traceback after the run."""

from __future__ import annotations

import os
from pathlib import Path

from stream.cli.errors import UsageError


def writable_directory(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a directory that exists (created with its parents) and can be written."""
    directory = Path(path)
    _make(directory, f"{flag} {directory}")
    return directory


def writable_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a file whose directory exists (created) and can be written, and which is
    not itself a directory."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"{flag} {file}: is a directory, a file name is needed")
    _make(file.parent, f"{flag} {file}")
    return file


def _make(directory: Path, where: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: cannot write there (permission denied)")
