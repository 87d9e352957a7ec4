"""An in-memory stand-in for a Kafka consumer, behind the ``KafkaSource`` interface."""

from __future__ import annotations

from stream.sources.kafka_source import KafkaSource, Record, SourceError


class MemorySource(KafkaSource):
    """Partitions held in memory, behind the ``KafkaSource`` interface."""

    def __init__(self, partitions: dict[int, list[bytes | None]]) -> None:
        self.partitions = partitions
        self.positions: dict[int, int] = {}
        self.assigned = False
        self.failing_polls = 0
        self.committed: dict[int, int] = {}
        self.assignments: list[dict[int, int]] = []
        self.closed = False
        self.paused = False
        self.paused_partitions: set[int] = set()
        self.keep_alives = 0

    def bind(self, config, on_assign, on_error) -> MemorySource:
        self.config, self.topic, self.on_assign, self.on_error = (
            config,
            config.topic,
            on_assign,
            on_error,
        )
        return self

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        if self.failing_polls:
            self.failing_polls -= 1
            raise SourceError("connection refused (test)")
        if not self.assigned:
            resume = self.on_assign(sorted(self.partitions))
            self.assignments.append(resume)
            self.positions = {p: resume.get(p, 0) for p in self.partitions}
            self.assigned = True
        records: list[Record] = []
        while len(records) < max_records and not self.drained() and not self.all_paused():
            for partition, values in sorted(self.partitions.items()):
                if partition in self.paused_partitions:
                    continue
                offset = self.positions[partition]
                if offset > len(values):  # out of range, as after the topic was recreated
                    if self.on_reset is not None:
                        self.on_reset(partition, offset)
                    self.positions[partition] = offset = 0  # start_from = "earliest"
                if offset < len(values) and len(records) < max_records:
                    records.append(Record(partition, offset, values[offset]))
                    self.positions[partition] += 1
        return records

    def rebalance(self) -> None:
        self.assigned = False

    def assignment(self) -> list[int]:
        return sorted(self.partitions) if self.assigned else []

    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        return {p: len(self.partitions[p]) for p in partitions}

    def highwater(self, partitions: list[int]) -> dict[int, int]:
        return self.end_offsets(partitions, 0.0)

    def commit(self, offsets: dict[int, int]) -> None:
        self.committed = dict(offsets)

    def close(self) -> None:
        self.closed = True

    def pause(self) -> None:
        self.paused = True
        self.paused_partitions |= set(self.assignment())

    def resume(self) -> None:
        self.paused = False
        self.paused_partitions -= set(self.assignment())

    def keep_alive(self) -> list[Record]:
        self.keep_alives += 1
        return self.poll(1, 0.0)

    def all_paused(self) -> bool:
        return self.paused_partitions >= set(self.partitions)

    def drained(self) -> bool:
        return self.assigned and all(
            self.positions[p] == len(v) for p, v in self.partitions.items()
        )
