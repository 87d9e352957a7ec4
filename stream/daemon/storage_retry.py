"""Writes that must become durable (checkpoints, dead letters), retried with backoff on failure.

A full disk (ENOSPC), an I/O error (EIO) or an unreachable dead-letter topic must not crash the
daemon, and must not be retried on every poll either (each checkpoint try serialises the whole
learner). :class:`StorageRetry` counts the failures of one kind of write in
``streamcl_storage_failures_total{what}``, logs the first of a run as an error and the rest at
info, waits a backoff that doubles up to a maximum before the next try, and after
``unhealthy_after`` failures in a row makes ``/healthz`` answer 503 ``failing`` with the
problem, until a write succeeds again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from stream.observe.telemetry import Telemetry
from stream.sources.wire import short

log = structlog.get_logger("streamcl.storage")


class StorageRetry:
    def __init__(
        self,
        what: str,
        telemetry: Telemetry,
        backoff: float,
        backoff_max: float,
        unhealthy_after: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.telemetry = telemetry
        telemetry.watch_storage(what)
        self.initial_backoff = backoff
        self.backoff_max = backoff_max
        self.unhealthy_after = unhealthy_after
        self.clock = clock
        self.backoff = backoff
        self.failures = 0
        self.next_try = clock()

    def ready(self) -> bool:
        """Whether the backoff after the last failure has passed."""
        return self.clock() >= self.next_try

    def failed(self, exc: BaseException) -> None:
        problem = short(f"{type(exc).__name__}: {exc}")
        self.failures += 1
        self.telemetry.storage_failed(self.what)
        wait = self.backoff
        event = f"{self.what}_failed"
        if self.failures == 1:
            log.error(event, problem=problem, retry_in=wait)
        else:
            log.info(event, problem=problem, retry_in=wait, failures=self.failures)
        if self.failures >= self.unhealthy_after:
            self.telemetry.set_problem(self.what, f"{self.failures} failures in a row: {problem}")
        self.next_try = self.clock() + wait
        self.backoff = min(self.backoff * 2, self.backoff_max)

    def succeeded(self) -> None:
        if self.failures:
            log.warning(f"{self.what}_recovered", failures=self.failures)
        self.failures = 0
        self.backoff = self.initial_backoff
        self.next_try = self.clock()
        self.telemetry.set_problem(self.what, None)
