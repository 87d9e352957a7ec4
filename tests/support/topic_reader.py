"""Reading a whole topic back in tests: every message, duplicates included."""

from __future__ import annotations

import time

import kafka


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of every message in ``topic``, partition by partition, in offset order."""
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return []  # not created yet
        wanted = [kafka.TopicPartition(topic, p) for p in partitions]
        consumer.assign(wanted)
        consumer.seek_to_beginning(*wanted)
        ends = consumer.end_offsets(wanted)
        found: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in wanted):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout} s"
            for tp, messages in consumer.poll(timeout_ms=500).items():
                found[tp.partition].extend((m.key, m.value) for m in messages)
    finally:
        consumer.close(autocommit=False)
    return [message for p in partitions for message in found[p]]
