"""Whether the broker answers, and when to ask it next.

Records arriving prove the broker is up; only when none have come for ``interval`` seconds does
the daemon ask the broker for the end offsets (a request that blocks the loop, so it is not made
while records flow). When a request fails or times out, the broker is reported down
(``streamcl_broker_up 0`` and one warning) and asked again after a backoff that doubles up to
``backoff_max``; the first answer after that reports it up again, with the outage's length.
The clients reconnect on their own meanwhile; nothing is lost, because offsets only move when
records are learned.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from stream.observe.telemetry import Telemetry

log = structlog.get_logger("streamcl.broker")


class BrokerWatch:
    def __init__(
        self,
        telemetry: Telemetry,
        interval: float,
        backoff: float,
        backoff_max: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.telemetry = telemetry
        self.interval = interval
        self.initial_backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self.backoff = backoff
        self.up: bool | None = None
        self.down_since: float | None = None
        self.failures = 0
        self.next_probe = clock()

    def due(self) -> bool:
        return self.clock() >= self.next_probe

    def expedite(self) -> None:
        """Probe at the next chance (a client reported trouble)."""
        self.next_probe = min(self.next_probe, self.clock())

    def alive(self) -> None:
        """Records arrived: the broker is up, and needs no probe for another interval."""
        if self.up is True:
            self.next_probe = self.clock() + self.interval
        else:
            self.succeeded()

    def succeeded(self) -> None:
        now = self.clock()
        if self.up is False and self.down_since is not None:
            log.warning(
                "broker_reachable",
                down_seconds=round(now - self.down_since, 3),
                failures=self.failures,
            )
        elif self.up is None:
            log.info("broker_reachable")
        self.up = True
        self.down_since = None
        self.failures = 0
        self.backoff = self.initial_backoff
        self.next_probe = now + self.interval
        self.telemetry.set_broker_up(True)

    def failed(self, problem: str) -> float:
        """Record a failed request; the seconds to wait before the next try."""
        now = self.clock()
        self.failures += 1
        wait = self.backoff
        if self.up is not False:
            self.down_since = now
            log.warning("broker_unreachable", problem=problem, retry_in=wait)
        else:
            log.info(
                "broker_still_unreachable", problem=problem, retry_in=wait, failures=self.failures
            )
        self.up = False
        self.next_probe = now + wait
        self.backoff = min(self.backoff * 2, self.backoff_max)
        self.telemetry.set_broker_up(False)
        return wait


class PartitionWatch:
    """Whether the consumer group gives this daemon any partition.

    A daemon that polls keeps ``/healthz`` beating even when it reads nothing, which hides a
    consumer that holds no partition: a topic that does not exist (a typo in ``kafka.topic``),
    another member of the group holding every partition, or a group stuck rebalancing. After
    ``patience`` seconds of answered polls without a partition, ``/healthz`` answers ``failing``
    with the problem (one ``no_partitions_assigned`` error in the log) until partitions come;
    ``streamcl_assigned_partitions`` shows the count all along. The patience covers a normal
    join, which may wait a rebalance timeout for a member that died without leaving.
    """

    PROBLEM = "partitions"

    def __init__(
        self,
        telemetry: Telemetry,
        topic: str,
        group: str,
        patience: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.telemetry = telemetry
        self.topic = topic
        self.group = group
        self.patience = patience
        self.clock = clock
        self.unassigned_since: float | None = None
        self.reported = False

    def polled(self, assignment: list[int]) -> None:
        """A poll was answered while the consumer held ``assignment``."""
        self.telemetry.set_assigned_partitions(self.topic, len(assignment))
        now = self.clock()
        if assignment:
            if self.reported:
                log.info("partitions_assigned_again", topic=self.topic, partitions=assignment)
                self.telemetry.set_problem(self.PROBLEM, None)
            self.unassigned_since, self.reported = None, False
            return
        if self.unassigned_since is None:
            self.unassigned_since = now
        waited = now - self.unassigned_since
        if waited > self.patience:
            problem = (
                f"no partition of topic {self.topic!r} assigned for {waited:.0f} s (consumer "
                f"group {self.group!r}): the topic may not exist, another member of the group "
                "may hold every partition, or the group may be stuck rebalancing"
            )
            if not self.reported:
                log.error(
                    "no_partitions_assigned",
                    topic=self.topic,
                    group=self.group,
                    waited_seconds=round(waited, 1),
                )
                self.reported = True
            self.telemetry.set_problem(self.PROBLEM, problem)

    def interrupted(self) -> None:
        """A poll failed (the broker away): the wait for partitions starts again once it
        answers, so an outage is not counted as time without partitions (the broker has its
        own gauge); a problem already reported stays until partitions come."""
        self.unassigned_since = None
