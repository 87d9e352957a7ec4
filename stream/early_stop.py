"""A stop asked of a scaled-out worker before the daemon could hear it.

``streamcl serve --workers N`` forwards SIGTERM/SIGINT to torchrun's workers. A worker that
torchrun has just started (after a restart of the group) spends seconds importing torch before
the daemon installs its handler; the default action then killed it, torchrun took that for a
failure and restarted the group again, and the stop was lost. ``python -m stream`` therefore
installs :func:`install` first thing in a torchrun worker, and the daemon, once it handles the
signals itself, stops at once if one came before (:data:`requested`).
"""

from __future__ import annotations

import signal
from types import FrameType

requested: list[int] = []


def _keep(signum: int, frame: FrameType | None) -> None:
    requested.append(signum)


def install() -> None:
    """Keep SIGTERM and SIGINT until the daemon takes them over."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _keep)
