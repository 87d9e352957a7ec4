"""Opening a file that someone else names or may have replaced: only a regular file is read.

A path that names a FIFO makes ``open`` wait for a writer (forever, at a daemon's start), a
device such as ``/dev/zero`` reads without end, and a directory fails deep inside a reader with
an error that names no file. Readers of outside files (checkpoints and scaled-out epochs,
configs, secrets, exported models, results, the poison log and the evaluation history) open
them with :func:`open_regular`, which refuses all of these at once without blocking, or read
them whole with :func:`read_regular`, which bounds what it reads. (Stream files, datasets and
backbone weights are refused by ``Path.is_file()`` before they are opened.) Both raise
:class:`OSError` subclasses, so a caller that reports ``exc.strerror`` for a missing file
reports these the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a directory."""


class FileTooLarge(OSError):
    """The file holds more bytes than its reader takes."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading; :class:`NotRegularFile` (without waiting for a FIFO's
    writer) when it is not a regular file, after symbolic links."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _kind(mode)
            raise NotRegularFile(errno.EINVAL, f"not a regular file: {kind}", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int | None) -> bytes:
    """The bytes of regular file ``path``; :class:`FileTooLarge` when it holds more than
    ``limit`` (None: no limit but the file's own size), checked before anything is read."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if limit is not None and size > limit:
            raise FileTooLarge(errno.EFBIG, f"{size} bytes, more than {limit}", str(path))
        # its size, and a byte more to see it grew (a read preallocates what it asks for)
        data = file.read((size if limit is None else min(size, limit)) + 1)
    if limit is not None and len(data) > limit:  # it grew while read
        raise FileTooLarge(errno.EFBIG, f"more than {limit} bytes", str(path))
    return data
