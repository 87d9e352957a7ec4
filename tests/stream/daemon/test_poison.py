"""The poisoned-message log of a scaled-out group (stream/daemon/poison.py)."""

from __future__ import annotations

import json
import os

import pytest

from stream.daemon import poison
from stream.daemon.poison import PoisonLog


def test_every_ranks_entries_at_or_after_the_checkpoint_are_read_back(tmp_path):
    log = PoisonLog(tmp_path, "samples")
    assert log.record(0, [(0, 4), (0, 5)], "RuntimeError: not positive definite")
    assert log.record(2, [(3, 1)], "x" * 5000)
    PoisonLog(tmp_path, "other-topic").record(1, [(0, 9)], "another group's topic")
    found = log.since({0: 5})
    assert sorted(found) == [(0, 5), (3, 1)]
    assert found[(0, 5)] == "RuntimeError: not positive definite"
    assert len(found[(3, 1)]) <= 200  # details are one short line


def test_hostile_lines_are_skipped_and_the_file_is_bounded(tmp_path, monkeypatch):
    log = PoisonLog(tmp_path, "t")
    lines = [
        b"not json",
        b"[1, 2]",
        json.dumps({"topic": "t", "partition": -1, "offset": 0}).encode(),
        json.dumps({"topic": "t", "partition": 0, "offset": 1.5}).encode(),
        json.dumps({"topic": "t", "partition": True, "offset": 1}).encode(),
        json.dumps({"topic": "t", "partition": 0, "offset": 2, "detail": ["a"]}).encode(),
        b"[" * 100_000,
        json.dumps({"topic": "t", "partition": 0, "offset": 3}).encode(),
    ]
    log.path(0).write_bytes(b"\n".join(lines) + b"\n")
    assert log.since({}) == {(0, 3): ""}
    monkeypatch.setattr(poison, "MAX_BYTES", log.path(0).stat().st_size + 10)
    assert not log.record(0, [(0, 7)], "does not fit")
    assert (0, 7) not in log.since({})


@pytest.mark.timeout(20)  # the old code waited for the FIFO's writer
def test_a_poison_file_that_is_not_a_regular_file_is_skipped_not_waited_on(tmp_path):
    log = PoisonLog(tmp_path, "t")
    assert log.record(0, [(0, 4)], "RuntimeError: not positive definite")
    os.mkfifo(log.path(1))
    log.path(2).mkdir()
    assert log.since({}) == {(0, 4): "RuntimeError: not positive definite"}


def test_a_rank_prunes_what_the_resumed_checkpoint_passed_so_the_file_never_fills(
    tmp_path, monkeypatch
):
    """The file only grew: after a few poison events it was full, nothing more was recorded,
    and the next poison batch failed the group at every restart."""
    monkeypatch.setattr(poison, "MAX_BYTES", 400)
    log = PoisonLog(tmp_path, "t")
    for event in range(6):  # each a restart: resumed past the batch recorded before
        first = 10 * event
        assert log.record(0, [(0, first), (1, first)], "not positive definite")
        log.prune(0, {0: first, 1: first})
        assert sorted(log.since({})) == [(0, first), (1, first)]
    log.path(0).write_bytes(log.path(0).read_bytes() + b"not json\n")
    log.prune(0, {0: 0, 1: 100})  # hostile lines go, later offsets stay
    assert log.since({}) == {(0, 50): "not positive definite"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poison.rank-0.jsonl"]
