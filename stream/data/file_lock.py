"""An ``flock`` taken without waiting: how a process keeps a file (a checkpoint directory's lock
file, a dead-letter file's) from a second daemon. The lock goes when its file is closed, or
with the process, even after ``kill -9``."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path
from typing import IO


def flocked(path: Path, mode: int = fcntl.LOCK_EX) -> IO[str] | None:
    """``path`` (made if absent) open with an flock of ``mode`` (``LOCK_EX`` or ``LOCK_SH``)
    held, or None when another open file holds a conflicting one."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return None
    return handle
