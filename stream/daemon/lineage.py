"""Which daemon published a prediction: the id of a checkpoint directory's line of daemons.

A daemon that restarts (after a crash, before or after its first checkpoint) reads back the
predictions published since its checkpoint and does not answer those requests again. Another
daemon on the same topics, one whose checkpoint directory was wiped to start afresh or which
serves another learner, must not take those answers for its own: it would never answer the
requests and would score the other model's predictions as its prequential accuracy. So every
prediction carries ``daemon``, a random id kept in the checkpoint directory (the file
``lineage``, made at the directory's first start, shared by the ranks of a scaled-out group),
and a daemon recovers only the predictions that carry its own.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import structlog

from stream.daemon.config import ServeConfigError
from stream.data.regular_file import read_regular

log = structlog.get_logger("streamcl.lineage")

LINEAGE_FILE = "lineage"
_ID = re.compile(r"[0-9a-f]{32}")


def daemon_lineage(directory: Path) -> str:
    """The lineage id of the checkpoint directory ``directory`` (which exists), made now if it
    has none; a damaged one is replaced (the predictions published under it are then answered
    again, as another daemon's would be)."""
    path = directory / LINEAGE_FILE
    try:
        text = read_regular(path, 64).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return _make(path)
    except OSError:  # not a regular file, too long, unreadable
        text = ""
    if _ID.fullmatch(text):
        return text
    log.warning("lineage_replaced", path=str(path), reason="not a lineage id")
    try:
        return _make(path, replace=True)
    except OSError as exc:
        raise ServeConfigError(
            f"checkpoint.dir: {path} cannot hold the daemon's lineage id "
            f"({exc.strerror or exc}); move it away"
        ) from None


def _make(path: Path, replace: bool = False) -> str:
    """A new id in ``path``, written whole before it appears; when another process (a rank of
    the same group) made one first, that one."""
    made = uuid.uuid4().hex
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{made[:8]}")
    temporary.write_text(made + "\n", encoding="ascii")
    try:
        if replace:
            os.replace(temporary, path)
            return made
        try:
            os.link(temporary, path)  # fails if another rank linked its own first
        except FileExistsError:
            return daemon_lineage(path.parent)
        return made
    finally:
        temporary.unlink(missing_ok=True)
