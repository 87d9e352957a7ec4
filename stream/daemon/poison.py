"""Messages a scaled-out group's learner failed on, so that the restarted group skips them.

A single daemon undoes a batch its learner fails on (stream/engine/guard.py). A scaled-out rank
cannot: the batch's gradient steps met the other ranks, and its statistics would be synced to
them (docs/daemon.md, "Faults"). It therefore records the messages of the batch here and fails;
torchrun restarts the group, every rank resumes from the last global checkpoint, and a message
recorded here is dead-lettered as ``learner_error`` instead of learned again. So a poison batch
costs one restart of the group, not a restart loop, and the model equals one that never saw it.

Each rank appends to its own file in ``checkpoint.dir`` (the one directory every rank shares),
``poison.rank-<r>.jsonl``, one JSON line per message, written and fsynced before the rank fails.
On resume every rank reads every rank's file (partitions move between ranks in another world)
and keeps the entries of its topic at or after the checkpoint's offsets. Each file is bounded by
:data:`MAX_BYTES`; what does not fit is not recorded (logged), and that batch fails again. Once
a rank has resumed from a global checkpoint it drops its own entries the checkpoint has passed
(:meth:`PoisonLog.prune`), so the file holds what may come again, not every poison batch ever
(it used to fill up, after which nothing was recorded and a poison batch failed at every
restart).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

from stream.daemon.checkpoint import write_atomically
from stream.data.regular_file import NotRegularFile, open_regular
from stream.sources.wire import short

log = structlog.get_logger("streamcl.poison")

MAX_BYTES = 1 << 20


class PoisonLog:
    """The poisoned messages of one group's topic, in its checkpoint directory."""

    def __init__(self, directory: Path, topic: str) -> None:
        self.directory = Path(directory)
        self.topic = topic

    def path(self, rank: int) -> Path:
        return self.directory / f"poison.rank-{rank}.jsonl"

    def record(self, rank: int, messages: list[tuple[int, int]], detail: str) -> bool:
        """Append ``messages`` ((partition, offset) each) for rank ``rank``, durably; False when
        the file would outgrow :data:`MAX_BYTES` (nothing written then)."""
        lines = b"".join(
            json.dumps(
                {"topic": self.topic, "partition": p, "offset": o, "detail": short(detail)}
            ).encode()
            + b"\n"
            for p, o in messages
        )
        path = self.path(rank)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if os.fstat(fd).st_size + len(lines) > MAX_BYTES:
                log.error("poison_log_full", path=str(path), messages=len(messages))
                return False
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def prune(self, rank: int, offsets: dict[int, int]) -> None:
        """Drop from rank ``rank``'s file the entries before ``offsets`` (the resumed global
        checkpoint's) or of another topic: no restart from that checkpoint or a later one reads
        those messages again. The file is replaced atomically, and only when something goes."""
        path = self.path(rank)
        try:
            with open_regular(path) as file:
                text = file.read(MAX_BYTES)
        except (FileNotFoundError, NotRegularFile):
            return
        lines = text.splitlines()
        kept = []
        for line in lines:
            entry = _entry(line)
            if (
                entry is not None
                and entry[0] == self.topic
                and entry[2] >= offsets.get(entry[1], 0)
            ):
                kept.append(line + b"\n")
        if len(kept) == len(lines):
            return
        write_atomically(path, b"".join(kept), mode=0o600)
        log.info("poison_pruned", path=str(path), dropped=len(lines) - len(kept), kept=len(kept))

    def since(self, offsets: dict[int, int]) -> dict[tuple[int, int], str]:
        """Every rank's recorded messages of this topic at or after ``offsets`` (partition ->
        the checkpoint's next offset; 0 where missing), with why; lines that are not such an
        entry are skipped (logged), and a file beyond :data:`MAX_BYTES` is read to that size."""
        found: dict[tuple[int, int], str] = {}
        for path in sorted(self.directory.glob("poison.rank-*.jsonl")):
            try:
                with open_regular(path) as file:
                    text = file.read(MAX_BYTES)
            except NotRegularFile as exc:
                log.warning("poison_file_skipped", path=str(path), problem=exc.strerror)
                continue
            for number, line in enumerate(text.splitlines(), 1):
                entry = _entry(line)
                if entry is None:
                    log.warning("poison_line_skipped", path=str(path), line=number)
                    continue
                topic, partition, offset, detail = entry
                if topic == self.topic and offset >= offsets.get(partition, 0):
                    found[(partition, offset)] = detail
        return found


def _entry(line: bytes) -> tuple[str, int, int, str] | None:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict):
        return None
    topic, partition, offset = entry.get("topic"), entry.get("partition"), entry.get("offset")
    detail = entry.get("detail", "")
    if not (
        isinstance(topic, str)
        and type(partition) is int
        and type(offset) is int
        and partition >= 0
        and offset >= 0
        and isinstance(detail, str)
    ):
        return None
    return topic, partition, offset, short(detail)
