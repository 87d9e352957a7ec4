"""A budget of log lines for events an outsider can make as often as it likes.

A daemon logs each invalid message and each unmatched label, which a flood of garbage on the
topic turns into one line per message: 88 MB of log for 365k small messages, where the
dead-letter files that hold the messages themselves stay within their bound. Counters carry
the totals (``streamcl_invalid_messages_total``, ``streamcl_labels_unmatched_total``); the log
keeps the first ``burst`` lines of each event per ``window`` seconds and then one
``log_lines_suppressed`` line for the rest of that window, when the next window opens or when
the daemon stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("streamcl.log_budget")

BURST = 20
WINDOW_SECONDS = 60.0


@dataclass
class _Window:
    opened: float
    logged: int = 0
    suppressed: int = 0


class LogBudget:
    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, event: str) -> bool:
        """Whether a line of ``event`` may be logged now (if not, it is counted)."""
        now = self.clock()
        window = self._windows.get(event)
        if window is None or now - window.opened >= self.window:
            if window is not None:
                self._summarise(event, window)
            window = self._windows[event] = _Window(now)
        if window.logged < self.burst:
            window.logged += 1
            return True
        window.suppressed += 1
        return False

    def flush(self) -> None:
        """Log what each open window suppressed (at a stop)."""
        for event, window in self._windows.items():
            self._summarise(event, window)
        self._windows.clear()

    def _summarise(self, event: str, window: _Window) -> None:
        if window.suppressed:
            log.warning(
                "log_lines_suppressed",
                suppressed_event=event,
                suppressed=window.suppressed,
                logged=window.logged,
                window_seconds=self.window,
                note="the counters have every one",
            )
