"""Group membership while a long batch is learned: polling decoupled from learning time.

A consumer that does not poll for ``max_poll_interval_ms`` is dropped from its group, and its
partitions go elsewhere; a learner slower than that (a wide analytic head, a big backbone on a
CPU) would lose them mid-stream. :class:`KeepAlive` wraps the learning of one poll's records:
a helper thread waits, and if learning is still going after ``interval`` seconds it pauses every
partition and polls, again every ``interval``, until learning ends; then the partitions are
resumed. Pausing costs the client's prefetched records (they are fetched again), so a fast
batch never pauses anything.

The consumer is used by one thread at a time: the daemon's thread does not touch it while it
learns, and the helper stops before the daemon polls again.
"""

from __future__ import annotations

import threading

import structlog

from stream.sources.kafka_source import KafkaSource, Record, SourceError

log = structlog.get_logger("streamcl.keep_alive")


class KeepAlive:
    """``with KeepAlive(source, interval): learn(...)``; ``records`` holds what a keep-alive
    poll returned (normally nothing), to be learned next."""

    def __init__(self, source: KafkaSource, interval: float) -> None:
        self.source = source
        self.interval = interval
        self.records: list[Record] = []
        self.polls = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamcl-keep-alive", daemon=True)

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if self.source.paused:
            self.source.resume()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                if not self.source.paused:
                    self.source.pause()
                    log.info("partitions_paused_while_learning", interval=self.interval)
                self.records += self.source.keep_alive()
                self.polls += 1
            except SourceError as exc:
                log.warning("keep_alive_failed", problem=str(exc))
