"""Daemon checkpoints: learner tensors, loop state and source offsets in one atomic file.

A checkpoint is everything needed to continue exactly where the daemon was: the learner's state
(model, replay memory, RNG), the event loop's state (seen classes, metrics, evaluations), the
next offset to read per partition and the dead-letter sink's position. They are written together,
so the offsets always describe exactly the messages the model has learned (as Flink and Bytewax
snapshot operator state with the source offsets).

One file per checkpoint, ``checkpoint-<sequence>.sclckpt``, little-endian::

    8 bytes   magic b"SCLCKPT2"
    8 bytes   uint64 seal: 0 SHA-256, 1 HMAC-SHA256 under the checkpoint key
    8 bytes   uint64 length J of the JSON section
    8 bytes   uint64 length T of the tensor section
    32 bytes  the seal of the first 32 header bytes, the JSON section and the tensor section
    J bytes   JSON (UTF-8): offsets, loop state, learner name and config, counters
    T bytes   the learner state as safetensors (learners/state/safetensors_io.py)

Trust: JSON and safetensors run no code when parsed, but a river model or a river drift
detector has no form other than a pickle (learners/state/sealed_pickle.py), and unpickling runs
what the pickle names. So a daemon whose state holds such pickles must be given a key (env var
``STREAMCL_CHECKPOINT_KEY`` or a key file, stream/daemon/checkpoint_key.py), signs every
checkpoint with it, and reads none whose HMAC does not verify: the seal is checked on the raw
bytes before a single byte is parsed, so a checkpoint planted by someone without the key is
refused without running anything. Without a key, checkpoints carry a SHA-256 digest (damage
detection) and a signed one is refused; a keyless daemon never unpickles (its learner and loop
hold none), so what it loads is data only. Format 1 (``SCLCKPT1``: the same without the seal
field, always SHA-256), written before checkpoint keys existed, is read by keyless stores only.

Writing is atomic: a temporary file in the same directory is written, fsynced, renamed over the
final name and the directory fsynced, so a crash leaves either the old or the new checkpoint,
never half of one. The newest ``keep`` checkpoints are kept; on start the newest whose length
and seal are right is offered first, and a corrupt, truncated or forged newer one is reported
and skipped. A lock file (``flock``) keeps a second daemon off the directory.

:class:`CheckpointStore` is the one writer and reader of checkpoint files; anything that
checkpoints (a daemon, a rank of a scaled-out run) goes through it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
import torch

from learners.machine_memory import memory_bytes
from learners.state.learner_state import LearnerState, non_finite
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from stream.data.file_lock import flocked
from stream.data.regular_file import read_regular

MAGIC = b"SCLCKPT2"
_OLD_MAGIC = b"SCLCKPT1"
_OLD_HEADER = struct.Struct("<8sQQ32s")
_HEADER = struct.Struct("<8sQQQ32s")
_SHA256, _HMAC = 0, 1
_LOCK_NAME = ".lock"
_NAME = re.compile(r"^checkpoint-(\d{12})\.sclckpt$")
_TEMP_PREFIX = ".checkpoint-"
MAX_RELISTS = 100  # listings of a directory a concurrent writer keeps pruning

log = structlog.get_logger("streamcl.checkpoint")


def checkpoint_bytes() -> int | None:
    """The most bytes a checkpoint file is read for: this machine's memory (a larger one could
    not be decoded here)."""
    return memory_bytes(torch.device("cpu"))


class CheckpointError(ValueError):
    """No usable checkpoint where one was expected; the message names the files and problems."""


class CorruptCheckpoint(ValueError):
    """One checkpoint file that fails its length or seal test; ``keyed``: the problem is the
    checkpoint key (a signed file without it, an unsigned one with it, a seal that fails)."""

    def __init__(self, message: str, keyed: bool = False) -> None:
        super().__init__(message)
        self.keyed = keyed


class CheckpointLocked(CheckpointError):
    """Another process holds the checkpoint directory's lock."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its sequence number, JSON section and learner state."""

    sequence: int
    meta: dict[str, Any]
    learner: LearnerState
    path: Path


def _seal(key: bytes | None, *parts: bytes) -> bytes:
    digest = hmac.new(key, digestmod=hashlib.sha256) if key else hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def encode(meta: dict[str, Any], learner: LearnerState, key: bytes | None = None) -> bytes:
    """The bytes of one checkpoint file, signed with ``key`` when one is given."""
    body = json.dumps(meta, separators=(",", ":")).encode()
    tensors = state_to_bytes(learner)
    mode = _HMAC if key else _SHA256
    prefix = _HEADER.pack(MAGIC, mode, len(body), len(tensors), b"")[:32]
    return prefix + _seal(key, prefix, body, tensors) + body + tensors


def decode(
    data: bytes, where: str = "checkpoint", key: bytes | None = None
) -> tuple[dict[str, Any], LearnerState]:
    """The JSON section and learner state of a checkpoint file's bytes, parsed only once the
    seal (with ``key``: the HMAC) verified."""
    if data[:8] == _OLD_MAGIC:
        if key:
            raise CorruptCheckpoint(
                f"{where}: checkpoint format 1 (an older streamcl) is unsigned; a daemon with a "
                "checkpoint key reads only checkpoints signed with it",
                keyed=True,
            )
        return _decode_format_1(data, where)
    if len(data) < _HEADER.size:
        raise CorruptCheckpoint(f"{where}: {len(data)} bytes, shorter than the header (truncated)")
    magic, mode, body_size, tensor_size, seal = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpoint(f"{where}: not a streamcl checkpoint (magic {magic!r})")
    if mode not in (_SHA256, _HMAC):
        raise CorruptCheckpoint(f"{where}: unknown seal {mode}")
    expected = _HEADER.size + body_size + tensor_size
    if len(data) != expected:
        raise CorruptCheckpoint(
            f"{where}: {len(data)} bytes, the header says {expected} (truncated?)"
        )
    if key and mode != _HMAC:
        raise CorruptCheckpoint(
            f"{where}: unsigned, but a checkpoint key is configured", keyed=True
        )
    if not key and mode == _HMAC:
        raise CorruptCheckpoint(
            f"{where}: signed; give the daemon its checkpoint key to load it", keyed=True
        )
    body = data[_HEADER.size : _HEADER.size + body_size]
    tensors = data[_HEADER.size + body_size :]
    if not hmac.compare_digest(_seal(key, data[:32], body, tensors), seal):
        problem = "HMAC does not verify under the configured key" if key else "checksum mismatch"
        raise CorruptCheckpoint(f"{where}: {problem} (corrupt or forged)", keyed=key is not None)
    return _sections(body, tensors, where)


def _decode_format_1(data: bytes, where: str) -> tuple[dict[str, Any], LearnerState]:
    """A checkpoint of streamcl before checkpoint keys (a SHA-256 over JSON and safetensors),
    so that a keyless daemon resumes the model it had; its content is data only."""
    if len(data) < _OLD_HEADER.size:
        raise CorruptCheckpoint(f"{where}: {len(data)} bytes, shorter than the header (truncated)")
    _, body_size, tensor_size, checksum = _OLD_HEADER.unpack_from(data)
    if len(data) != _OLD_HEADER.size + body_size + tensor_size:
        raise CorruptCheckpoint(
            f"{where}: {len(data)} bytes, not what the header says (truncated?)"
        )
    body = data[_OLD_HEADER.size : _OLD_HEADER.size + body_size]
    tensors = data[_OLD_HEADER.size + body_size :]
    if not hmac.compare_digest(_seal(None, body, tensors), checksum):
        raise CorruptCheckpoint(f"{where}: checksum mismatch (corrupt)")
    return _sections(body, tensors, where)


def _sections(body: bytes, tensors: bytes, where: str) -> tuple[dict[str, Any], LearnerState]:
    """The parsed sections of a checkpoint whose seal verified. A learner state holding NaN or
    inf is refused like a damaged file: no streamcl writes one (the daemon checks the state
    before each checkpoint), and one resumed would make every batch after it look poisoned."""
    try:
        meta, learner = json.loads(body), state_from_bytes(tensors)
    except Exception as exc:  # a sealed but malformed section (a bug, or our key leaked)
        raise CorruptCheckpoint(
            f"{where}: unreadable content: {type(exc).__name__}: {exc}"
        ) from None
    problem = non_finite(learner)
    if problem is not None:
        raise CorruptCheckpoint(f"{where}: the learner's {problem}")
    return meta, learner


def _holder(path: Path) -> str:
    """The pid the holder of the lock file ``path`` wrote into it."""
    try:
        return path.read_text()[:32].strip() or "unknown"
    except OSError:
        return "unknown"


class CheckpointStore:
    """The checkpoints of one daemon, in one directory."""

    def __init__(self, directory: str | Path, keep: int = 3, key: bytes | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.key = key
        # why each file the last candidates() passed over was, newest first
        self.skipped: list[CorruptCheckpoint] = []
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] | None = None
        self._shared: IO[str] | None = None

    def lock(self, name: str = _LOCK_NAME) -> None:
        """Take the directory's lock ``name`` (one per writer: a rank of a scaled-out daemon has
        its own), or raise :class:`CheckpointLocked` when another process holds it (released by
        :meth:`unlock` or when the process ends, even by ``kill -9``).

        A single daemon holds the directory's own lock (``.lock``) alone; each rank of a
        scaled-out group holds it shared beside its rank's lock, so that neither a single daemon
        nor a group starts on a directory the other serves (each locked only its own file, and
        both served the same topic from one directory)."""
        shared = None
        if name != _LOCK_NAME:
            shared = flocked(self.directory / _LOCK_NAME, fcntl.LOCK_SH)
            if shared is None:
                raise CheckpointLocked(
                    f"checkpoint.dir {self.directory} is in use by a single streamcl daemon "
                    f"(pid {_holder(self.directory / _LOCK_NAME)}); stop it before scaling out"
                )
        handle = flocked(self.directory / name, fcntl.LOCK_EX)
        if handle is None:
            if shared is not None:
                shared.close()
            elif (group := flocked(self.directory / _LOCK_NAME, fcntl.LOCK_SH)) is not None:
                group.close()  # only shared holders: the ranks of a group
                raise CheckpointLocked(
                    f"checkpoint.dir {self.directory} is in use by another streamcl daemon "
                    "(a scaled-out group, serve --workers); give each daemon its own directory"
                )
            raise CheckpointLocked(
                f"checkpoint.dir {self.directory} is in use by another streamcl daemon "
                f"(pid {_holder(self.directory / name)}); give each daemon its own directory"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock, self._shared = handle, shared

    def unlock(self) -> None:
        for held in (self._lock, self._shared):
            if held is not None:
                held.close()  # closing the file releases the flock
        self._lock = self._shared = None

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
        data = encode({**meta, "sequence": sequence}, learner, self.key)
        write_atomically(path, data, temp)
        for _, old in self.files()[self.keep :]:
            old.unlink()
        return path

    def candidates(self) -> Iterator[Checkpoint]:
        """Every checkpoint whose length and seal are right, newest first (a bad one is logged
        and skipped). The caller restores the first it can use and asks for the next when the
        content of one turns out unusable.

        A reader beside a running daemon (``streamcl predict``/``export``) can see a listed file
        pruned before it is read: the writer pruned it because it wrote newer ones, so the
        directory is listed again and those are offered first (at most
        :data:`MAX_RELISTS` times, so a reader slower than the writer still ends)."""
        tried: set[int] = set()
        self.skipped = []
        for _ in range(MAX_RELISTS):
            pruned = False
            for sequence, path in self.files():
                if sequence in tried:
                    continue
                tried.add(sequence)
                try:
                    data = read_regular(path, checkpoint_bytes())
                except FileNotFoundError:
                    pruned = True  # the writer wrote newer checkpoints since the listing
                    break
                except OSError as exc:  # a FIFO, a device, a directory, a file beyond memory
                    problem = exc.strerror or str(exc)
                    log.warning("checkpoint_skipped", path=str(path), problem=problem)
                    self.skipped.append(CorruptCheckpoint(f"{path}: {problem}"))
                    continue
                try:
                    meta, learner = decode(data, str(path), self.key)
                except CorruptCheckpoint as exc:
                    log.warning("checkpoint_skipped", path=str(path), problem=str(exc))
                    self.skipped.append(exc)
                    continue
                yield Checkpoint(sequence, meta, learner, path)
            if not pruned:
                return

    def latest(self) -> Checkpoint | None:
        """The newest valid checkpoint; None if there is none at all.

        Raises :class:`CheckpointError` when checkpoint files exist but none is valid: starting
        from scratch then would silently throw away everything learned.
        """
        for checkpoint in self.candidates():
            return checkpoint
        self.refuse_if_any("none has a valid seal")
        return None

    def refuse_if_any(self, problem: str) -> None:
        """Raise :class:`CheckpointError` if checkpoint files exist (none of which was usable)."""
        if self.files():
            raise CheckpointError(
                f"no usable checkpoint in {self.directory}: {problem} (see the log); "
                "move these files away to start from scratch"
            )


def write_atomically(path: Path, data: bytes, temp: Path | None = None, mode: int = 0o666) -> None:
    """``data`` as the whole of ``path``, or ``path`` as it was: written to ``temp`` (default
    ``.<name>.tmp`` beside it, created with ``mode`` less the umask), fsynced, renamed over
    ``path``, the rename made durable."""
    temp = temp or path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    _fsync_directory(path.parent)


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
