"""Where a command writes: checked before any work, so a path that cannot be written is one
usage error (exit 2) instead of a traceback after the run."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

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


def replaceable_file(path: str | Path, flag: str = "--out") -> Path:
    """:func:`writable_file` for a result renamed over ``path`` when done: an existing device
    (``/dev/full``, ``/dev/stdout``), FIFO or socket there would be replaced by a regular file
    (for root: the device gone), so it is refused. (A command that writes in place, such as
    ``schedule``, may write to those.)"""
    file = Path(path)
    if file.exists() and not file.is_dir() and not file.is_file():
        raise UsageError(f"{flag} {file}: exists and is not a regular file; name a file")
    return writable_file(file, flag)


def not_inside(out: Path, directory: str | Path, what: str, flag: str = "--out") -> None:
    """Refuse ``out`` inside ``directory`` (``what`` it is, such as a checkpoint directory):
    the result would replace a file there, e.g. the newest checkpoint."""
    root = Path(directory).resolve()
    if root == out.resolve() or root in out.resolve().parents:
        raise UsageError(f"{flag} {out}: is inside {what} ({directory}); write it elsewhere")


def _make(directory: Path, where: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: cannot write there (permission denied)")


def not_an_input(out: Path, inputs: Mapping[str, str | Path | None], flag: str = "--out") -> None:
    """Refuse ``out`` when it is one of the files a command reads (``inputs``: a description of
    each, such as ``"the stream"``, to its path): writing it would destroy what is being read
    (a memory-mapped stream overwritten in place ended in a bus error and an empty file)."""
    if not out.exists():
        return
    for what, path in inputs.items():
        if path is not None and Path(path).exists() and out.samefile(path):
            raise UsageError(f"{flag} {out}: is {what} ({path}); name another file")


@contextmanager
def replaced_when_done(out: Path) -> Iterator[TextIO]:
    """A text file that becomes ``out`` only once the block ends without an error: a failed or
    interrupted run leaves ``out`` as it was (and no temporary beside it)."""
    temporary = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with temporary.open("w", encoding="utf-8") as file:
            yield file
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
