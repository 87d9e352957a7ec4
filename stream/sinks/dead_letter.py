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
It is bounded: a file that reaches ``file_bytes`` is renamed ``<file>.<n>`` (n counting up) and
a new one begun; the newest ``files`` of those are kept, older letters deleted (logged). A
checkpoint records the rotation count with the length, and a restart undoes rotations made
after it, so a flood of invalid messages neither fills the disk nor stops learning. Since a
restart cuts the file back, one daemon's file must not be another's: a lock (``flock`` on
``.<file>.lock`` beside it) refuses a second daemon the file (two daemons started in one folder
with the same relative ``file`` shared it, and a restart of one cut off the other's letters).
The topic sink is at-least-once: after a crash, a message dead-lettered after the last
checkpoint is sent again (its ``streamcl-offset`` header identifies it). A letter the broker
refuses for good (too large for it, refused by its policy) is written to a local spill file
instead, counted and logged, so that it can never hold checkpoints back.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from stream.data.file_lock import flocked
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

    def position(self) -> dict[str, int] | None:
        """What a checkpoint records to resume the sink exactly (a file's rotations and
        length); None when nothing is needed."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class DeadLetterFileInUse(ValueError):
    """Another process holds the dead-letter file (a config error: give each daemon its own)."""


class FileDeadLetters(DeadLetterSink):
    """Dead letters appended to a JSON-lines file, rotated at ``file_bytes``.

    Appends go straight to the file descriptor (no buffer that could fail half-written at a
    later flush); ``write_bytes`` is ``os.write`` unless a test injects faults. ``resume_at``:
    a checkpoint's :meth:`position` (an int: a checkpoint from before rotation, a length).
    ``exclusive``: hold the file's lock (:class:`DeadLetterFileInUse` when another process
    does); a file that is never cut back (a topic sink's spill file, which the ranks of a
    scaled-out daemon share) may go without."""

    def __init__(
        self,
        path: str | Path,
        max_value_bytes: int,
        resume_at: dict[str, int] | int | None = None,
        write_bytes: Callable[[int, bytes], int] = os.write,
        file_bytes: int = 256 << 20,
        files: int = 8,
        exclusive: bool = True,
    ) -> None:
        super().__init__(max_value_bytes)
        if file_bytes <= 0 or files < 1:
            raise ValueError(f"file_bytes and files must be positive, got {file_bytes}, {files}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_bytes = write_bytes
        self.file_bytes = file_bytes
        self.files = files
        # before anything is cut back or rotated: taken for the sink's life
        self._lock = _locked(self.path) if exclusive else None
        try:
            self._open(resume_at)
        except BaseException:  # let go of the lock, or the next try in this process is refused
            if self._lock is not None:
                self._lock.close()
            raise
        self.pending: list[bytes] = []

    def _open(self, resume_at: dict[str, int] | int | None) -> None:
        """Open the file as the checkpoint's ``resume_at`` left it."""
        self.rotations = max(self._rotated(), default=0)
        if type(resume_at) is int:
            resume_at = {"rotations": self.rotations, "bytes": resume_at}
        if resume_at is not None and not (
            isinstance(resume_at, dict)
            and all(
                type(resume_at.get(k)) is int and resume_at[k] >= 0 for k in ("rotations", "bytes")
            )
        ):
            raise ValueError(
                f"dead-letter position {str(resume_at)[:80]!r} is not one a checkpoint writes"
            )
        if resume_at is not None and int(resume_at["rotations"]) < self.rotations:
            self._undo_rotations(int(resume_at["rotations"]))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.length = os.fstat(self.fd).st_size
        if resume_at is not None and self.length > int(resume_at["bytes"]):
            # Lines past the checkpoint are for messages that will be read and judged again.
            os.ftruncate(self.fd, int(resume_at["bytes"]))
            self.length = int(resume_at["bytes"])

    def _rotated_path(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotated(self) -> list[int]:
        """The numbers of the rotated files there are."""
        prefix = self.path.name + "."
        return [
            int(p.name[len(prefix) :])
            for p in self.path.parent.glob(f"{glob.escape(self.path.name)}.*")
            if p.name[len(prefix) :].isdigit()
        ]

    def _undo_rotations(self, rotations: int) -> None:
        """Back to the checkpoint's file: rotations after it held letters that will be written
        again, so the file current then is put back and the later ones removed."""
        self.path.unlink(missing_ok=True)
        for number in sorted(self._rotated()):
            if number > rotations + 1:
                self._rotated_path(number).unlink()
        if self._rotated_path(rotations + 1).exists():
            self._rotated_path(rotations + 1).rename(self.path)
        self.rotations = rotations

    def _rotate(self) -> None:
        """The file is full: rename it ``<file>.<n>``, begin the next, keep the newest ``files``.
        If that fails, the file goes on growing until the next letter tries again."""
        rotated = self._rotated_path(self.rotations + 1)
        try:
            os.fsync(self.fd)
            self.path.rename(rotated)
        except OSError as exc:
            log.error("dead_letter_rotation_failed", path=str(self.path), problem=str(exc))
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            rotated.rename(self.path)  # the open file is the current one again
            log.error("dead_letter_rotation_failed", path=str(self.path), problem=str(exc))
            return
        os.close(self.fd)
        self.fd = fd
        self.rotations += 1
        self.length = 0
        gone = [n for n in self._rotated() if n <= self.rotations - self.files]
        for number in gone:
            self._rotated_path(number).unlink()
        if gone:
            log.warning("dead_letters_rotated_away", path=str(self.path), files=len(gone))

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
            if self.length >= self.file_bytes:
                self._rotate()

    def sync(self) -> None:
        self._append_pending()
        os.fsync(self.fd)

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def position(self) -> dict[str, int]:
        return {"rotations": self.rotations, "bytes": self.length}

    def close(self) -> None:
        if self.pending:
            log.error(
                "dead_letters_not_stored", path=str(self.path), letters=len(self.pending)
            )  # the next start re-reads their messages from the checkpoint's offsets
        os.close(self.fd)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def _locked(path: Path) -> IO[str]:
    """The open lock file ``.<name>.lock`` beside ``path``, its flock held, or
    :class:`DeadLetterFileInUse`."""
    lock = flocked(path.with_name(f".{path.name}.lock"))  # not a rotated file's name
    if lock is None:
        raise DeadLetterFileInUse(
            f"dead_letter.file {path} is in use by another streamcl daemon; give each daemon "
            "its own file (a relative path is taken from the folder the daemon starts in)"
        )
    return lock


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
            # Which letters failed, and how: spill the refused, send the others again. The
            # letters it does not name were delivered, or are still with the producer when the
            # flush gave up waiting (a later flush says); a failure that names none and is not
            # such a wait sends every letter in flight again.
            for key, permanent in exc.failed_of(self.in_flight).items():
                letter = self.in_flight.pop(key)
                if permanent:
                    self._spill(letter, str(exc))
                else:
                    self.pending.append(letter)
            if not exc.unconfirmed:
                self.in_flight.clear()
            if self.pending or self.in_flight:
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
