"""Daemon checkpoints: learner tensors, loop state and source offsets in one atomic file.

A checkpoint is everything needed to continue exactly where the daemon was: the learner's state
(model, replay memory, RNG), the event loop's state (seen classes, metrics, evaluations), the
next offset to read per partition and the dead-letter sink's position. They are written together,
so the offsets always describe exactly the messages the model has learned (as Flink and Bytewax
snapshot operator state with the source offsets).

One file per checkpoint, ``checkpoint-<sequence>.sclckpt``, little-endian::

    8 bytes   magic b"SCLCKPT1"
    8 bytes   uint64 length J of the JSON section
    8 bytes   uint64 length T of the tensor section
    32 bytes  SHA-256 of the JSON section followed by the tensor section
    J bytes   JSON (UTF-8): offsets, loop state, learner name and config, counters
    T bytes   the learner state as safetensors (learners/state/safetensors_io.py); no pickle anywhere

Writing is atomic: a temporary file in the same directory is written, fsynced, renamed over the
final name and the directory fsynced, so a crash leaves either the old or the new checkpoint,
never half of one. The newest ``keep`` checkpoints are kept; on start the newest whose length
and checksum are right is loaded, and a corrupt or truncated newer one is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from learners.state.learner_state import LearnerState
from learners.state.safetensors_io import state_from_bytes, state_to_bytes

MAGIC = b"SCLCKPT1"
_HEADER = struct.Struct("<8sQQ32s")
_NAME = re.compile(r"^checkpoint-(\d{12})\.sclckpt$")
_TEMP_PREFIX = ".checkpoint-"

log = structlog.get_logger("streamcl.checkpoint")


class CheckpointError(ValueError):
    """No usable checkpoint where one was expected; the message names the files and problems."""


class CorruptCheckpoint(ValueError):
    """One checkpoint file that fails its length or checksum test."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its sequence number, JSON section and learner state."""

    sequence: int
    meta: dict[str, Any]
    learner: LearnerState
    path: Path


def encode(meta: dict[str, Any], learner: LearnerState) -> bytes:
    """The bytes of one checkpoint file."""
    body = json.dumps(meta, separators=(",", ":")).encode()
    tensors = state_to_bytes(learner)
    digest = hashlib.sha256()
    digest.update(body)
    digest.update(tensors)
    return _HEADER.pack(MAGIC, len(body), len(tensors), digest.digest()) + body + tensors


def decode(data: bytes, where: str = "checkpoint") -> tuple[dict[str, Any], LearnerState]:
    """The JSON section and learner state of a checkpoint file's bytes."""
    if len(data) < _HEADER.size:
        raise CorruptCheckpoint(f"{where}: {len(data)} bytes, shorter than the header (truncated)")
    magic, body_size, tensor_size, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpoint(f"{where}: not a streamcl checkpoint (magic {magic!r})")
    expected = _HEADER.size + body_size + tensor_size
    if len(data) != expected:
        raise CorruptCheckpoint(
            f"{where}: {len(data)} bytes, the header says {expected} (truncated?)"
        )
    body = data[_HEADER.size : _HEADER.size + body_size]
    tensors = data[_HEADER.size + body_size :]
    digest = hashlib.sha256()
    digest.update(body)
    digest.update(tensors)
    if digest.digest() != checksum:
        raise CorruptCheckpoint(f"{where}: checksum mismatch (corrupt)")
    return json.loads(body), state_from_bytes(tensors)


class CheckpointStore:
    """The checkpoints of one daemon, in one directory."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)

    def remove_interrupted_writes(self) -> None:
        """Delete temporary files: writes that a crash interrupted before their rename (call it
        only from the process that writes the checkpoints)."""
        for stale in self.directory.glob(f"{_TEMP_PREFIX}*"):
            stale.unlink()

    def files(self) -> list[tuple[int, Path]]:
        """``(sequence, path)`` of every checkpoint file, newest first."""
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def write(self, meta: dict[str, Any], learner: LearnerState) -> Path:
        """Write the next checkpoint atomically and drop the ones beyond ``keep``."""
        files = self.files()
        sequence = files[0][0] + 1 if files else 1
        path = self.directory / f"checkpoint-{sequence:012d}.sclckpt"
        temp = self.directory / f"{_TEMP_PREFIX}{sequence:012d}.tmp"
        data = encode({**meta, "sequence": sequence}, learner)
        with temp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        _fsync_directory(self.directory)
        for _, old in self.files()[self.keep :]:
            old.unlink()
        return path

    def latest(self) -> Checkpoint | None:
        """The newest valid checkpoint; None if there is none at all.

        Raises :class:`CheckpointError` when checkpoint files exist but none is valid: starting
        from scratch then would silently throw away everything learned.
        """
        problems = []
        for sequence, path in self.files():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # pruned by the writer since it was listed
            try:
                meta, learner = decode(data, str(path))
            except CorruptCheckpoint as exc:
                log.warning("checkpoint_skipped", path=str(path), problem=str(exc))
                problems.append(str(exc))
                continue
            return Checkpoint(sequence, meta, learner, path)
        if problems:
            raise CheckpointError(
                f"no valid checkpoint in {self.directory}: {'; '.join(problems)}; "
                "move these files away to start from scratch"
            )
        return None


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
