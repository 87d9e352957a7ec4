"""Where invalid messages go: a JSON-lines file or a Kafka topic, with the reason and offset.

Each dead letter records the source topic, partition and offset, the reason code (as in
``streamcl_invalid_messages_total{reason}``), a one-line detail, and the message value (base64
in the file; as is in the topic), cut to ``max_value_bytes`` so an oversized message does not
fill the sink.

The file sink is exactly-once across crashes: its length is saved in every checkpoint, and on
restart the file is cut back to that length before the daemon re-reads the messages after the
checkpoint's offsets. The topic sink is at-least-once: after a crash, a message dead-lettered
after the last checkpoint is sent again (its ``streamcl-offset`` header identifies it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.sinks.kafka_sink import Headers, KafkaSink, SinkError


class DeadLetterSink(ABC):
    def __init__(self, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes

    @abstractmethod
    def write(
        self, topic: str, partition: int, offset: int, value: bytes | None, reason: str, detail: str
    ) -> None:
        """Dead-letter one message."""

    @abstractmethod
    def sync(self) -> None:
        """Make every dead letter so far durable (called before each checkpoint)."""

    def position(self) -> int | None:
        """What a checkpoint records to resume the sink exactly (the file's length)."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class FileDeadLetters(DeadLetterSink):
    """Dead letters appended to a JSON-lines file."""

    def __init__(
        self, path: str | Path, max_value_bytes: int, resume_at: int | None = None
    ) -> None:
        super().__init__(max_value_bytes)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("ab")
        if resume_at is not None and self.file.tell() > resume_at:
            # Lines past the checkpoint are for messages that will be read and judged again.
            self.file.truncate(resume_at)
        self.file.seek(0, os.SEEK_END)

    def write(
        self, topic: str, partition: int, offset: int, value: bytes | None, reason: str, detail: str
    ) -> None:
        raw = value or b""
        letter: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason,
            "detail": detail,
            "timestamp": time.time(),
            "value_bytes": len(raw),
            "value_base64": base64.b64encode(raw[: self.max_value_bytes]).decode(),
        }
        self.file.write(json.dumps(letter).encode() + b"\n")

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def position(self) -> int:
        self.file.flush()
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


class TopicDeadLetters(DeadLetterSink):
    """Dead letters produced to a Kafka topic, the reason and origin in headers.

    The producer is opened on first use, and a letter that cannot be handed to it (broker
    unreachable) is kept and retried; ``sync`` fails until every letter is delivered, so no
    checkpoint moves past a message whose dead letter is not in the topic.
    """

    def __init__(
        self, open_sink: Callable[[], KafkaSink], topic: str, max_value_bytes: int
    ) -> None:
        super().__init__(max_value_bytes)
        self._open_sink = open_sink
        self.sink: KafkaSink | None = None
        self.topic = topic
        self.pending: list[tuple[bytes, bytes, Headers]] = []

    def write(
        self, topic: str, partition: int, offset: int, value: bytes | None, reason: str, detail: str
    ) -> None:
        raw = value or b""
        headers = [
            ("streamcl-reason", reason.encode()),
            ("streamcl-detail", detail.encode()),
            ("streamcl-topic", topic.encode()),
            ("streamcl-partition", str(partition).encode()),
            ("streamcl-offset", str(offset).encode()),
            ("streamcl-value-bytes", str(len(raw)).encode()),
        ]
        key = f"{topic}:{partition}:{offset}".encode()
        self.pending.append((raw[: self.max_value_bytes], key, headers))
        with contextlib.suppress(SinkError):
            self._send_pending()

    def _send_pending(self) -> None:
        if self.sink is None:
            self.sink = self._open_sink()
        while self.pending:
            value, key, headers = self.pending[0]
            self.sink.send(self.topic, value, key=key, headers=headers)
            self.pending.pop(0)

    def sync(self) -> None:
        self._send_pending()
        assert self.sink is not None
        self.sink.flush()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
