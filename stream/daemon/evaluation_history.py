"""The daemon's evaluation history: every evaluation, one JSON line each, next to the checkpoints.

The event loop keeps running aggregates only (stream/engine/evaluation_aggregates.py); the whole
anytime curve, with per-class accuracies, goes here instead of into memory and every checkpoint::

    <checkpoint.dir>/history/evaluations-000001.jsonl
    {"kind": "periodic", "samples_seen": 1000, "accuracy": 0.91, "level_accuracy": [...],
     "class_accuracy": [[...]], "either_accuracy": [], "time": 1765000000.0}

Append-only and rotated: a file that reaches ``file_bytes`` is closed and the next one begun;
the newest ``files`` are kept. Exactly-once across crashes, like the dead-letter file: every
checkpoint records the current file and its length, and on restart the file is cut back to that
length (newer files removed) before the daemon re-learns what came after the checkpoint, so an
evaluation is never written twice. :func:`read_history` reads it back in order.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream.data.regular_file import open_regular
from stream.engine.evaluation import Evaluation
from stream.engine.event_loop import EventLoop, Observer

# six digits at least: file 1000000 and on are still this history's (and pruned)
_NAME = re.compile(r"^evaluations-(\d{6,})\.jsonl$")


def _files(directory: Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of the history files, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def read_history(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every evaluation line kept, oldest first. Safe beside a running daemon: a file it
    pruned since the listing is passed over, and a last line it is still writing (no newline
    yet) is left for a later read."""
    for _, path in _files(Path(directory)):
        try:
            with open_regular(path) as lines:
                for line in lines:
                    if not line.endswith(b"\n"):
                        break  # being written
                    if line.strip():
                        yield json.loads(line)
        except FileNotFoundError:
            continue  # rotated away since the listing


class EvaluationHistory(Observer):
    """Appends each evaluation of the loop it observes to the rotated history files."""

    def __init__(
        self,
        directory: str | Path,
        file_bytes: int = 64 << 20,
        files: int = 16,
        resume_at: dict[str, Any] | None = None,
    ) -> None:
        if file_bytes <= 0 or files < 1:
            raise ValueError(f"file_bytes and files must be positive, got {file_bytes}, {files}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file_bytes = file_bytes
        self.keep = files
        existing = _files(self.directory)
        number = existing[-1][0] if existing else 1
        if resume_at is not None:
            # Lines past the checkpoint describe evaluations that will be made again.
            number = int(resume_at["file"])
            for later, path in existing:
                if later > number:
                    path.unlink()
        self.number = number
        self.file = self._path(number).open("ab")
        if resume_at is not None and self.file.tell() > int(resume_at["bytes"]):
            self.file.truncate(int(resume_at["bytes"]))
        self.file.seek(0, os.SEEK_END)

    def _path(self, number: int) -> Path:
        return self.directory / f"evaluations-{number:06d}.jsonl"

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        line = {"kind": kind, **evaluation.to_json(), "time": time.time()}
        self.file.write(json.dumps(line, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        if self.file.tell() >= self.file_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self.sync()
        self.file.close()
        self.number += 1
        self.file = self._path(self.number).open("ab")
        for _, old in _files(self.directory)[: -self.keep]:
            old.unlink()

    def sync(self) -> None:
        """Make every line so far durable (called before each checkpoint)."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def position(self) -> dict[str, int]:
        """What a checkpoint records to resume the history exactly."""
        self.file.flush()
        return {"file": self.number, "bytes": self.file.tell()}

    def close(self) -> None:
        self.file.close()
