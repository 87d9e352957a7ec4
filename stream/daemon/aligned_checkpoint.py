"""Aligned checkpoints of a scaled-out daemon: one global checkpoint out of every rank's shard.

At a sync point every rank writes its shard of epoch E, ``epoch-<E>/rank-<r>.sclckpt`` (the
single-process checkpoint format of :mod:`stream.daemon.checkpoint`: offsets of its partitions,
loop state, counters and learner state), atomically. The ranks then agree that all shards were
written, and rank 0 writes ``epoch-<E>/MANIFEST.json`` last, atomically: the epoch number, the
world size, every shard's file name, length and SHA-256, and the union of the offsets. An epoch
counts only once its manifest exists and every shard it names matches it, so a worker killed
while writing (or before the manifest) leaves the previous epoch as the one to resume from.

When the learner's model is the same on every rank at a sync point (synced statistics, just
synchronised), only rank 0's shard carries the learner; the others carry offsets and loop state.
Gradient learners keep a replay memory per rank, so every shard carries its rank's learner.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from learners.state.learner_state import LearnerState
from stream.daemon.checkpoint import (
    MAX_RELISTS,
    CheckpointError,
    CorruptCheckpoint,
    checkpoint_bytes,
    decode,
    encode,
    write_atomically,
)
from stream.daemon.checkpoint_meta import restored_offsets
from stream.data.regular_file import FileTooLarge, NotRegularFile, read_regular

log = structlog.get_logger("streamcl.aligned_checkpoint")

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
_EPOCH = re.compile(r"^epoch-(\d{12})$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_WORLD_SIZE = 4096
"""Ranks a manifest may name (one shard file each)."""
MAX_MANIFEST_BYTES = 16 << 20
"""A manifest of MAX_WORLD_SIZE shards and 65,536 partitions' offsets takes under 2 MiB."""


def shard_name(rank: int) -> str:
    return f"rank-{rank:05d}.sclckpt"


@dataclass
class Shard:
    """One rank's part of a global checkpoint, as loaded."""

    epoch: int
    rank: int
    meta: dict[str, Any]
    learner: LearnerState | None


class AlignedCheckpoints:
    """The epochs of one scaled-out daemon, in one directory shared by its ranks."""

    def __init__(self, directory: str | Path, keep: int = 3, key: bytes | None = None) -> None:
        """``key`` signs every shard and is required to read one (stream/daemon/checkpoint.py)."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.key = key
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def found_in(directory: str | Path) -> bool:
        """Whether ``directory`` holds a group's epochs (making nothing, unlike the store)."""
        path = Path(directory)
        return path.is_dir() and any(_EPOCH.match(p.name) for p in path.iterdir())

    def epoch_dir(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:012d}"

    def epochs(self) -> list[int]:
        """Every epoch directory's number, newest first, complete or not."""
        found = [int(m.group(1)) for p in self.directory.iterdir() if (m := _EPOCH.match(p.name))]
        return sorted(found, reverse=True)

    def write_shard(
        self, epoch: int, rank: int, meta: dict[str, Any], learner: LearnerState | None
    ) -> dict[str, Any]:
        """Write rank ``rank``'s shard of ``epoch`` atomically; returns its manifest entry."""
        directory = self.epoch_dir(epoch)
        directory.mkdir(exist_ok=True)
        data = encode(
            {**meta, "epoch": epoch, "rank": rank, "has_learner": learner is not None},
            learner or LearnerState({}, {}),
            self.key,
        )
        name = shard_name(rank)
        write_atomically(directory / name, data)
        return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def write_manifest(
        self, epoch: int, world_size: int, shards: list[dict[str, Any]], offsets: dict[str, int]
    ) -> Path:
        """Rank 0, after every rank wrote its shard: the epoch becomes the one to resume from.
        Epochs beyond ``keep`` are deleted."""
        manifest = {
            "streamcl_manifest": MANIFEST_FORMAT,
            "epoch": epoch,
            "world_size": world_size,
            "shards": shards,
            "offsets": offsets,
        }
        path = self.epoch_dir(epoch) / MANIFEST
        write_atomically(path, json.dumps(manifest, indent=1).encode())
        for old in self.epochs():
            if old < epoch and old not in self._kept(epoch):
                shutil.rmtree(self.epoch_dir(old), ignore_errors=True)
        return path

    def _kept(self, newest: int) -> set[int]:
        # a damaged manifest does not count: the good epochs before it are kept instead
        complete = [e for e in self.epochs() if e <= newest and isinstance(self._manifest(e), dict)]
        return set(complete[: self.keep])

    def _manifest(self, epoch: int) -> dict[str, Any] | str | None:
        """The epoch's manifest as parsed; None when there is none (a crash interrupted the
        epoch before rank 0 wrote it); what is wrong when the file is there but no manifest
        (not a regular file, larger than any manifest, not JSON, nested deeper than Python
        parses): rank 0 writes it atomically, so that is damage, not an interrupted write."""
        path = self.epoch_dir(epoch) / MANIFEST
        try:
            manifest = json.loads(read_regular(path, MAX_MANIFEST_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            return f"{path}: not a manifest ({type(exc).__name__})"
        return manifest if isinstance(manifest, dict) else f"{path}: not a manifest (not an object)"

    def latest(self) -> dict[str, Any] | None:
        """The manifest of the newest complete epoch, whose shards all match it; None when no
        epoch exists. :class:`CheckpointError` when epochs exist but none is complete and valid
        (starting afresh would throw away what was learned)."""
        return next(self.manifests(), None)

    def manifests(self) -> Iterator[dict[str, Any]]:
        """The manifest of every complete epoch whose shards all match it, newest first: the
        caller resumes from the first whose content it can use. :class:`CheckpointError` at
        the end when epochs exist but none was complete and valid.

        A reader beside a running group can see an epoch pruned while it reads it (its shards
        gone): rank 0 pruned it because it completed a newer one, so the directory is listed
        again and epochs that appeared since are offered too (at most
        :data:`MAX_RELISTS` listings)."""
        problems = []
        found = False
        tried: set[int] = set()
        for _ in range(MAX_RELISTS):
            fresh = [epoch for epoch in self.epochs() if epoch not in tried]
            if not fresh:
                break
            for epoch in fresh:
                tried.add(epoch)
                manifest = self._manifest(epoch)
                if manifest is None:
                    continue  # interrupted before the manifest: not a global checkpoint
                problem = manifest if isinstance(manifest, str) else self._verify(epoch, manifest)
                if problem is None:
                    assert isinstance(manifest, dict)
                    found = True
                    yield manifest
                else:
                    log.warning("epoch_skipped", epoch=epoch, problem=problem)
                    problems.append(problem)
        if problems and not found:
            raise CheckpointError(
                f"no complete global checkpoint in {self.directory}: {'; '.join(problems)}; "
                "move these epochs away to start from scratch"
            )

    def _verify(self, epoch: int, manifest: dict[str, Any]) -> str | None:
        problem = _malformed(epoch, manifest)
        if problem is not None:
            return f"{self.epoch_dir(epoch) / MANIFEST}: {problem}"
        for entry in manifest["shards"]:
            path = self.epoch_dir(epoch) / entry["file"]
            try:
                data = read_regular(path, entry["bytes"])
            except FileNotFoundError:
                return f"{path} is missing"
            except (NotRegularFile, FileTooLarge):
                return f"{path} does not match its manifest"
            if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return f"{path} does not match its manifest"
        return None

    def load_shard(self, manifest: dict[str, Any], rank: int) -> Shard:
        """Shard ``rank`` of the manifest's epoch (verified against the manifest)."""
        epoch = int(manifest["epoch"])
        path = self.epoch_dir(epoch) / shard_name(rank)
        try:
            meta, learner = decode(read_regular(path, checkpoint_bytes()), str(path), self.key)
        except (OSError, CorruptCheckpoint) as exc:
            raise CheckpointError(f"epoch {epoch}: {exc}") from None
        return Shard(epoch, rank, meta, learner if meta.get("has_learner") else None)

    def remove_incomplete(self) -> None:
        """Delete epochs newer than the newest one with a manifest file: writes that a crash
        interrupted before rank 0 wrote it. An epoch whose manifest is there but damaged is
        kept (passed over, and reported, when the epochs are read): deleting it would throw
        away what was learned. Call it only while no rank writes (at start, before the ranks
        meet)."""
        for epoch in self.epochs():
            if os.path.lexists(self.epoch_dir(epoch) / MANIFEST):
                return
            log.info("epoch_removed", epoch=epoch, reason="interrupted before its manifest")
            shutil.rmtree(self.epoch_dir(epoch), ignore_errors=True)


def _malformed(epoch: int, manifest: dict[str, Any]) -> str | None:
    """What makes ``manifest`` one rank 0 could not have written for ``epoch`` (None: nothing).
    A manifest is outside bytes: its shard names become paths to read, its world size the
    number of shards to load, its offsets where the ranks resume."""
    if manifest.get("streamcl_manifest") != MANIFEST_FORMAT:
        return f"manifest format {str(manifest.get('streamcl_manifest'))[:20]!r}"
    if manifest.get("epoch") != epoch or type(manifest.get("epoch")) is not int:
        return f"written for epoch {str(manifest.get('epoch'))[:20]}, found in epoch {epoch}"
    size = manifest.get("world_size")
    if type(size) is not int or not 1 <= size <= MAX_WORLD_SIZE:
        return f"world size {str(size)[:20]} is not in [1, {MAX_WORLD_SIZE}]"
    shards = manifest.get("shards")
    if not isinstance(shards, list) or len(shards) != size:
        return f"not one shard entry per rank of {size}"
    for rank, entry in enumerate(shards):
        if (
            not isinstance(entry, dict)
            or entry.get("file") != shard_name(rank)
            or type(entry.get("bytes")) is not int
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.fullmatch(entry["sha256"])
        ):
            return f"the entry of rank {rank} is not a shard's file, length and digest"
    try:
        restored_offsets(manifest.get("offsets"), "manifest offsets")
    except ValueError as exc:
        return str(exc)
    return None
