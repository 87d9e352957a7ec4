"""The predictions topic: one JSON message per request, published exactly once across crashes.

A prediction message (docs/serving.md)::

    {"id": 17, "predicted": {"label": 3}, "scores": {"label": [null, 0.1, ...]},
     "position": 1234, "latency_seconds": 0.0012, "served_at": 1765000000.5,
     "request": {"topic": "samples", "partition": 0, "offset": 4711, "index": 0}}

``scores`` holds every class's score per level (``null`` for a class that cannot be
predicted), or, with ``top_k``, ``"top_k": {"label": [[3, 0.9], [5, 0.4]]}`` instead. The key is
``topic:partition:offset:index`` of the request.

Exactly once: before each checkpoint the sink is flushed and the topic's end offsets are
recorded in it. After a crash, the daemon re-reads its requests from the checkpoint's offsets;
:func:`read_published` first collects the predictions published after the checkpoint, and a
request found there is not answered again: its recorded prediction is the one that was served,
and it is what the request's label is scored against.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import structlog

from stream.sinks.kafka_sink import KafkaSink, SinkError
from stream.sources.kafka_source import client_error

log = structlog.get_logger("streamcl.predictions")


def request_key(topic: str, partition: int, offset: int, index: int) -> str:
    return f"{topic}:{partition}:{offset}:{index}"


def prediction_json(
    id: int | None,
    predicted: Sequence[int],
    scores: Sequence[np.ndarray],
    level_names: Sequence[str],
    position: int,
    top_k: int | None,
) -> dict[str, Any]:
    """One sample's prediction: the class per level (None where nothing can be predicted) and
    its scores (all, or the ``top_k`` best with ``-inf`` left out)."""
    message: dict[str, Any] = {
        "id": None if id is None or id < 0 else int(id),
        "predicted": {
            name: (int(c) if c >= 0 else None)
            for name, c in zip(level_names, predicted, strict=True)
        },
        "position": int(position),
    }
    if top_k is None:
        message["scores"] = {
            name: [v if math.isfinite(v) else None for v in row.tolist()]
            for name, row in zip(level_names, scores, strict=True)
        }
    else:
        best: dict[str, list[list[Any]]] = {}
        for name, row in zip(level_names, scores, strict=True):
            order = np.argsort(-row, kind="stable")[:top_k]
            best[name] = [[int(c), float(row[c])] for c in order if math.isfinite(row[c])]
        message["top_k"] = best
    return message


class PredictionSink:
    """Publishes predictions to ``topic`` and says where the topic ends (for checkpoints).

    The producer is opened on first use; a message that cannot be handed over is kept and
    retried, one handed over is kept until a flush confirms it (sent again if its delivery
    failed), and ``sync`` fails (:class:`SinkError`) until all are delivered, so no checkpoint
    moves past a request whose prediction is not in the topic.
    """

    def __init__(self, open_sink: Callable[[], KafkaSink], topic: str, bootstrap: str) -> None:
        self._open_sink = open_sink
        self.topic = topic
        self.bootstrap = bootstrap
        self.sink: KafkaSink | None = None
        self.pending: list[tuple[bytes, bytes]] = []  # (value, key), not yet handed over
        self.in_flight: dict[bytes, bytes] = {}  # key -> value, handed over, not yet confirmed
        self._offsets: Any = None  # a consumer kept for end-offset requests, opened on use

    def publish(self, message: dict[str, Any], key: str) -> None:
        self.pending.append((json.dumps(message, separators=(",", ":")).encode(), key.encode()))

    def send(self) -> None:
        """Hand every pending message to the producer (:class:`SinkError` if it cannot)."""
        if self.sink is None:
            sink = self._open_sink()
            sink.ensure_topic(self.topic)
            self.sink = sink
        while self.pending:
            value, key = self.pending[0]
            self.sink.send(self.topic, value, key=key)
            self.in_flight[key] = value
            self.pending.pop(0)

    def sync(self) -> dict[int, int]:
        """Deliver everything; the topic's end offset per partition afterwards."""
        self.send()
        assert self.sink is not None
        try:
            self.sink.flush()
        except SinkError as exc:
            # Send the failed again, first; those not named are delivered, or still with the
            # producer when the flush gave up waiting (a later flush names them if they fail).
            again = [(self.in_flight.pop(k), k) for k in exc.failed_of(self.in_flight)]
            self.pending[:0] = again
            if not exc.unconfirmed:
                self.in_flight.clear()
            raise
        self.in_flight.clear()
        import kafka.errors

        try:
            if self._offsets is None:
                self._offsets = _consumer(self.bootstrap)
            return _end_offsets(self._offsets, self.topic)
        except kafka.errors.KafkaError as exc:
            self._close_offsets()
            raise SinkError(f"end offsets of {self.topic!r}: {client_error(exc)}") from None

    def _close_offsets(self) -> None:
        if self._offsets is not None:
            self._offsets.close(autocommit=False)
            self._offsets = None

    def close(self) -> None:
        self._close_offsets()
        if self.sink is not None:
            self.sink.close()


def _consumer(bootstrap: str) -> Any:
    import kafka

    return kafka.KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15_000,
    )


def _end_offsets(consumer: Any, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""
    import kafka

    partitions = consumer.partitions_for_topic(topic) or set()
    wanted = [kafka.TopicPartition(topic, p) for p in sorted(partitions)]
    ends = consumer.end_offsets(wanted) if wanted else {}
    return {tp.partition: int(offset) for tp, offset in ends.items()}


def read_published(
    bootstrap: str,
    topic: str,
    start: dict[int, int],
    timeout: float = 60.0,
    accept: Callable[[dict[str, Any]], bool] | None = None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """The predictions in ``topic`` from ``start`` (partition -> offset; 0 where missing) to
    its end, by request key (the last one wins); messages :func:`published_prediction` or
    ``accept`` (the reader's own check, e.g. of the classes) refuse are passed over, so that
    none replaces a prediction read before it, and counted in a warning. With ``keep``, only
    the well-formed predictions it keeps are held (a scaled-out rank's partitions, requests
    the reader will see again): the others are read past, not held in memory."""
    import kafka
    import kafka.errors

    found: dict[str, dict[str, Any]] = {}
    foreign = 0
    deadline = time.monotonic() + timeout
    try:
        consumer = _consumer(bootstrap)
        try:
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            if not partitions:
                return found
            wanted = [kafka.TopicPartition(topic, p) for p in partitions]
            consumer.assign(wanted)
            ends = consumer.end_offsets(wanted)
            for tp in wanted:
                consumer.seek(tp, start.get(tp.partition, 0))
            while any(consumer.position(tp) < ends[tp] for tp in wanted):
                if time.monotonic() > deadline:
                    raise SinkError(f"{topic!r} not read to its end within {timeout:g} s")
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        checked = published_prediction(message.key, message.value)
                        if checked is None or (accept is not None and not accept(checked[1])):
                            foreign += 1
                            continue
                        if keep is None or keep(checked[1]):
                            found[checked[0]] = checked[1]
        finally:
            consumer.close(autocommit=False)
    except kafka.errors.KafkaError as exc:
        raise SinkError(f"reading {topic!r}: {client_error(exc)}") from None
    if foreign:
        log.warning("predictions_unreadable", topic=topic, count=foreign)
    return found


def published_prediction(
    key: bytes | None, value: bytes | None
) -> tuple[str, dict[str, Any]] | None:
    """``(key, message)`` of a message read back from the predictions topic, or None for one
    the daemon cannot have published there (another producer's, damaged, forged): not JSON, or
    nested past what Python parses, or without a well-formed request and served prediction, or
    keyed otherwise than its request. Such a message is passed over; the request it claims to
    answer, if any, is answered again."""
    if key is None or value is None:
        return None
    try:
        text_key = key.decode()
        message = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        return None
    if not isinstance(message, dict):
        return None
    request = message.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("topic"), str):
        return None
    partition, offset, index = (_place(request.get(n)) for n in ("partition", "offset", "index"))
    if partition is None or offset is None or index is None:
        return None
    if text_key != request_key(request["topic"], partition, offset, index):
        return None
    predicted = message.get("predicted")
    if not isinstance(predicted, dict) or not all(
        c is None or type(c) is int for c in predicted.values()
    ):
        return None
    served_at = message.get("served_at")
    if isinstance(served_at, bool) or not isinstance(served_at, int | float):
        return None
    try:
        if not math.isfinite(served_at):  # an int beyond the float range raises
            return None
    except OverflowError:
        return None
    return text_key, message


def _place(value: Any) -> int | None:
    """A partition, offset or index as published (an int in [0, 2⁶³), not a bool), else None."""
    return value if type(value) is int and 0 <= value < 1 << 63 else None
