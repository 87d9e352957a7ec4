"""Where invalid messages go: a JSON-lines file or a Kafka topic, with the reason and offset.

Each dead letter records the source topic, partition and offset, the reason code (as in
``streamcl_invalid_messages_total{reason}``), a one-line detail (at most
``stream.sources.wire.MAX_DETAIL`` characters), and the message value (base64 in the file; as is
in the topic), cut to ``max_value_bytes`` so that neither an oversized message nor an
attacker's payload fills the sink or exceeds the broker's message limit.

Storage trouble never escapes :meth:`DeadLetterSink.write`: a letter that cannot be stored now
(a full disk, an I/O error, a broker away) is kept and retried, and :meth:`DeadLetterSink.sync`
raises until every letter is stored, so no checkpoint moves past a message whose dead letter is
not durable. ``backlog`` says how many wait; the daemon stops reading while too many do.

The file sink is exactly-once across crashes: its length is saved in every checkpoint, and on
restart the file is cut back to that length before the daemon re-reads the messages after the
checkpoint's offsets. A failed append is cut back too, so the file never holds half a line.
The topic sink is at-least-once: after a crash, a message dead-lettered after the last
checkpoint is sent again (its ``streamcl-offset`` header identifies it). A letter the broker
refuses for good (too large for it, refused by its policy) is written to a local spill file
instead, counted and logged, so that it can never hold checkpoints back.
"""

from __future__ import annotations

import base64
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stream.sinks.kafka_sink import Headers, KafkaSink, SinkError
from stream.sources.wire import short

log = structlog.get_logger("streamcl.dead_letter")


@dataclass(frozen=True)
class Letter:
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    value: bytes  # already cut to the sink's max_value_bytes
    value_bytes: int  # the original length
    timestamp: float

    @property
    def key(self) -> bytes:
        return f"{self.topic}:{self.partition}:{self.offset}".encode()

    def json_line(self) -> bytes:
        letter: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "timestamp": self.timestamp,
            "value_bytes": self.value_bytes,
            "value_base64": base64.b64encode(self.value).decode(),
        }
        return json.dumps(letter).encode() + b"\n"

    def headers(self) -> Headers:
        return [
            ("streamcl-reason", self.reason.encode()),
            ("streamcl-detail", self.detail.encode()),
            ("streamcl-topic", self.topic.encode()),
            ("streamcl-partition", str(self.partition).encode()),
            ("streamcl-offset", str(self.offset).encode()),
            ("streamcl-value-bytes", str(self.value_bytes).encode()),
        ]


class DeadLetterSink(ABC):
    def __init__(self, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes

    def write(
        self, topic: str, partition: int, offset: int, value: bytes | None, reason: str, detail: str
    ) -> None:
        """Dead-letter one message (kept for a retry if it cannot be stored now)."""
        raw = value or b""
        self._store(
            Letter(
                topic,
                partition,
                offset,
                reason,
                short(detail),
                raw[: self.max_value_bytes],
                len(raw),
                time.time(),
            )
        )

    @abstractmethod
    def _store(self, letter: Letter) -> None: ...

    @abstractmethod
    def sync(self) -> None:
        """Make every dead letter so far durable (called before each checkpoint); ``OSError``
        or :class:`SinkError` while some cannot be stored."""

    @property
    @abstractmethod
    def backlog(self) -> int:
        """Letters written but not yet stored."""

    def position(self) -> int | None:
        """What a checkpoint records to resume the sink exactly (the file's length)."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class FileDeadLetters(DeadLetterSink):
    """Dead letters appended to a JSON-lines file.

    Appends go straight to the file descriptor (no buffer that could fail half-written at a
    later flush); ``write_bytes`` is ``os.write`` unless a test injects faults."""

    def __init__(
        self,
        path: str | Path,
        max_value_bytes: int,
        resume_at: int | None = None,
        write_bytes: Callable[[int, bytes], int] = os.write,
    ) -> None:
        super().__init__(max_value_bytes)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_bytes = write_bytes
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.length = os.fstat(self.fd).st_size
        if resume_at is not None and self.length > resume_at:
            # Lines past the checkpoint are for messages that will be read and judged again.
            os.ftruncate(self.fd, resume_at)
            self.length = resume_at
        self.pending: list[bytes] = []

    def _store(self, letter: Letter) -> None:
        self.pending.append(letter.json_line())
        try:
            self._append_pending()
        except OSError as exc:
            log.warning(
                "dead_letter_deferred", path=str(self.path), problem=str(exc), backlog=self.backlog
            )

    def _append_pending(self) -> None:
        while self.pending:
            line = self.pending[0]
            try:
                done = 0
                while done < len(line):
                    done += self._write_bytes(self.fd, line[done:])
            except OSError:
                # Cut a partial line back off (truncating needs no free space).
                try:
                    os.ftruncate(self.fd, self.length)
                except OSError as cut:
                    log.error("dead_letter_cut_failed", path=str(self.path), problem=str(cut))
                raise
            self.length += len(line)
            self.pending.pop(0)

    def sync(self) -> None:
        self._append_pending()
        os.fsync(self.fd)

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def position(self) -> int:
        return self.length

    def close(self) -> None:
        if self.pending:
            log.error(
                "dead_letters_not_stored", path=str(self.path), letters=len(self.pending)
            )  # the next start re-reads their messages from the checkpoint's offsets
        os.close(self.fd)


class TopicDeadLetters(DeadLetterSink):
    """Dead letters produced to a Kafka topic, the reason and origin in headers.

    The producer is opened on first use. A letter that cannot be handed to it, or whose delivery
    fails for a reason that may pass (broker unreachable, timeout), is kept and sent again; one
    the broker refuses for good goes to ``spill`` (a :class:`FileDeadLetters`) and
    ``on_spill`` is told. ``sync`` fails until every letter is delivered or spilled, so no
    checkpoint moves past a message whose dead letter is nowhere.
    """

    def __init__(
        self,
        open_sink: Callable[[], KafkaSink],
        topic: str,
        max_value_bytes: int,
        spill: FileDeadLetters | None = None,
        on_spill: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(max_value_bytes)
        self._open_sink = open_sink
        self.sink: KafkaSink | None = None
        self.topic = topic
        self.pending: list[Letter] = []  # not yet handed to the producer
        self.in_flight: dict[bytes, Letter] = {}  # handed over, delivery not yet confirmed
        self.spill = spill
        self.on_spill = on_spill
        self.spilled = 0

    def _store(self, letter: Letter) -> None:
        self.pending.append(letter)
        try:
            self._send_pending()
        except SinkError as exc:
            log.warning("dead_letter_deferred", topic=self.topic, problem=short(str(exc)))

    def _send_pending(self) -> None:
        if self.sink is None:
            self.sink = self._open_sink()
        while self.pending:
            letter = self.pending[0]
            try:
                self.sink.send(self.topic, letter.value, key=letter.key, headers=letter.headers())
            except SinkError as exc:
                if not exc.permanent:
                    raise
                self._spill(letter, str(exc))
            else:
                self.in_flight[letter.key] = letter
            self.pending.pop(0)

    def _spill(self, letter: Letter, problem: str) -> None:
        if self.spill is None:
            raise SinkError(f"dead letter {letter.key.decode()} refused for good: {problem}")
        self.spill._store(letter)
        self.spilled += 1
        log.error(
            "dead_letter_spilled",
            topic=self.topic,
            key=letter.key.decode(),
            reason=letter.reason,
            problem=short(problem),
            spill=str(self.spill.path),
        )
        if self.on_spill is not None:
            self.on_spill(problem)

    def sync(self) -> None:
        self._send_pending()
        assert self.sink is not None
        try:
            self.sink.flush()
        except SinkError as exc:
            # Which letters failed, and how: spill the refused, send the others again. A
            # failure that names no message leaves every letter in flight to be sent again.
            failed = exc.failed or dict.fromkeys(self.in_flight, False)
            for key, permanent in failed.items():
                letter = self.in_flight.pop(key, None)
                if letter is None:
                    continue
                if permanent:
                    self._spill(letter, str(exc))
                else:
                    self.pending.append(letter)
            self.in_flight.clear()
            if self.pending:
                raise
        self.in_flight.clear()
        if self.spill is not None:
            self.spill.sync()

    @property
    def backlog(self) -> int:
        return len(self.pending) + (0 if self.spill is None else self.spill.backlog)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.spill is not None:
            self.spill.close()
