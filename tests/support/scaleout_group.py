"""A scaled-out ``streamcl serve --workers N`` group in tests: its topic, its ranks, its epochs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from learners import registry
from learners.base import Learner, Problem
from stream.daemon.aligned_checkpoint import AlignedCheckpoints
from stream.sinks.kafka_sink import open_sink
from stream.sources.wire import encode_binary
from tests.support.serve_process import ServeProcess


def publish(
    bootstrap: str,
    topic: str,
    partitions: int,
    x: np.ndarray,
    y: np.ndarray,
    per_message: int,
    start: int = 0,
) -> dict[int, int]:
    """Binary messages of ``per_message`` samples, dealt round-robin over the partitions (a
    topic created on first use); returns how many messages each partition got."""
    sink = open_sink("confluent", bootstrap)
    assert sink.ensure_topic(topic, partitions) == partitions
    sent = dict.fromkeys(range(partitions), 0)
    for number, first in enumerate(range(0, len(y), per_message)):
        rows = slice(first, first + per_message)
        ids = np.arange(start + first, start + min(first + per_message, len(y)))
        partition = (start // per_message + number) % partitions
        sink.send(topic, encode_binary(x[rows], y[rows], ids=ids), partition=partition)
        sent[partition] += 1
    sink.flush()
    sink.close()
    return sent


class ScaleOutGroup(ServeProcess):
    """``streamcl serve --workers N``: the launcher process, its ranks (by their log lines) and
    the aligned checkpoints they write."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str, workers: int) -> None:
        super().__init__(config, workdir, name)
        self.workers = workers

    def command(self) -> list[str]:
        """With ``workers`` 0: no ``--workers`` flag (the directory decides)."""
        flag = ["--workers", str(self.workers)] if self.workers else []
        return [*super().command(), *flag]

    @property
    def store(self) -> AlignedCheckpoints:
        return AlignedCheckpoints(self.checkpoint_dir)

    def rank_pids(self, timeout: float) -> dict[int, int]:
        """The pid of each rank of the current group, from its ``serving`` line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {e["rank"]: e["pid"] for e in self.events() if e["event"] == "serving"}
            if len(pids) == self.workers:
                return pids
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"not every rank serves within {timeout} s: {self.tail()}")

    def kill_rank(self, rank: int, timeout: float) -> None:
        os.kill(self.rank_pids(timeout)[rank], signal.SIGKILL)

    def wait_for_epoch(self, epoch: int, timeout: float) -> dict[str, Any]:
        """The manifest of the first complete epoch numbered ``epoch`` or later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            manifest = self.store.latest()
            if manifest is not None and manifest["epoch"] >= epoch:
                return manifest
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no epoch {epoch} within {timeout} s: {self.tail()}")

    def wait_for_offsets(self, ends: dict[int, int], timeout: float) -> dict[str, Any]:
        """The manifest of the first complete epoch whose offsets reach ``ends``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            manifest = self.store.latest()
            if manifest is not None:
                offsets = {int(p): o for p, o in manifest["offsets"].items()}
                if offsets == ends:
                    return manifest
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"offsets {ends} not checkpointed within {timeout} s: {self.tail()}")

    def learner(self, manifest: dict[str, Any], rank: int, problem: Problem) -> Learner:
        """The learner of ``rank``'s shard of the manifest's epoch."""
        shard = self.store.load_shard(manifest, rank)
        assert shard.learner is not None
        learner = registry.create(
            self.config["learner"]["name"], problem, self.config["learner"].get("options", {})
        )
        learner.load_state_dict(shard.learner)
        return learner
