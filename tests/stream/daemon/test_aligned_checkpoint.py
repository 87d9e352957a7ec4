"""Aligned checkpoints: an epoch counts only with its manifest and every shard it names."""

from __future__ import annotations

import json
import re

import pytest
import torch

from learners.state.learner_state import LearnerState
from stream.daemon.aligned_checkpoint import MANIFEST, AlignedCheckpoints, shard_name
from stream.daemon.checkpoint import CheckpointError


def write_epoch(store: AlignedCheckpoints, epoch: int, ranks: int, manifest: bool = True) -> None:
    entries = [
        store.write_shard(
            epoch,
            rank,
            {"offsets": {str(rank): epoch * 10}},
            LearnerState({"w": torch.full((2,), float(epoch))}, {}) if rank == 0 else None,
        )
        for rank in range(ranks)
    ]
    if manifest:
        offsets = {str(rank): epoch * 10 for rank in range(ranks)}
        store.write_manifest(epoch, ranks, entries, offsets)


def test_the_latest_epoch_with_a_manifest_is_the_one_to_resume(tmp_path):
    store = AlignedCheckpoints(tmp_path)
    assert store.latest() is None
    write_epoch(store, 1, 2)
    write_epoch(store, 2, 2, manifest=False)  # a rank died before rank 0 wrote the manifest
    manifest = store.latest()
    assert manifest is not None and manifest["epoch"] == 1
    assert manifest["offsets"] == {"0": 10, "1": 10}
    shard = store.load_shard(manifest, 0)
    assert shard.learner is not None and torch.equal(shard.learner.tensors["w"], torch.ones(2))
    assert store.load_shard(manifest, 1).learner is None


def test_a_shard_that_does_not_match_its_manifest_falls_back_to_the_previous_epoch(tmp_path):
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1, 2)
    write_epoch(store, 2, 2)
    shard = store.epoch_dir(2) / shard_name(1)
    shard.write_bytes(shard.read_bytes()[:-1])
    manifest = store.latest()
    assert manifest is not None and manifest["epoch"] == 1


def test_a_reader_beside_a_group_that_prunes_what_it_listed_gets_the_newer_epoch(tmp_path):
    """Between a reader's listing and its read, rank 0 completes newer epochs and prunes every
    epoch listed: the reader takes the newest instead of calling the directory unusable."""
    writer = AlignedCheckpoints(tmp_path, keep=2)
    for epoch in (1, 2):
        write_epoch(writer, epoch, 2)
    reader = AlignedCheckpoints(tmp_path)
    listed = reader.epochs
    moved_on = []

    def listing_then_the_group_moves_on():
        epochs = listed()
        if not moved_on:
            moved_on.append(True)
            for epoch in (3, 4):
                write_epoch(writer, epoch, 2)  # prunes epochs 1 and 2
        return epochs

    reader.epochs = listing_then_the_group_moves_on  # type: ignore[method-assign]
    manifest = reader.latest()
    assert manifest is not None and manifest["epoch"] == 4


def test_no_valid_epoch_at_all_is_an_error_not_a_fresh_start(tmp_path):
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1, 1)
    (store.epoch_dir(1) / shard_name(0)).unlink()
    with pytest.raises(CheckpointError, match="no complete global checkpoint"):
        store.latest()


def test_incomplete_epochs_after_the_last_complete_one_are_removed(tmp_path):
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1, 2)
    write_epoch(store, 2, 2, manifest=False)
    write_epoch(store, 3, 1, manifest=False)
    store.remove_incomplete()
    assert store.epochs() == [1]


def test_only_the_newest_complete_epochs_are_kept(tmp_path):
    store = AlignedCheckpoints(tmp_path, keep=2)
    for epoch in range(1, 5):
        write_epoch(store, epoch, 2)
    assert store.epochs() == [4, 3]
    assert (store.epoch_dir(4) / MANIFEST).exists()


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: {**m, "streamcl_manifest": 9}, "manifest format"),
        (lambda m: {**m, "epoch": 1}, "written for epoch 1, found in epoch 2"),
        (lambda m: {**m, "world_size": 10**9}, "world size 1000000000"),
        (lambda m: {**m, "world_size": 3}, "one shard entry per rank of 3"),
        (lambda m: {**m, "shards": [*m["shards"][:1], {**m["shards"][1], "file": "../x"}]},
         "the entry of rank 1"),
        (lambda m: {**m, "shards": ["rank-00000.sclckpt", "rank-00001.sclckpt"]},
         "the entry of rank 0"),
        (lambda m: {**m, "offsets": {"0": -1}}, "offset of 0 -1"),
    ],
)  # fmt: skip
def test_a_manifest_rank_0_could_not_have_written_falls_back_to_the_previous_epoch(
    tmp_path, change, problem
):
    """Its shard names become paths, its world size a count of shards, its offsets resume
    points: each is checked, and a manifest that fails is passed over like a torn shard."""
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1, 2)
    write_epoch(store, 2, 2)
    path = store.epoch_dir(2) / MANIFEST
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    assert store.latest()["epoch"] == 1
    (store.epoch_dir(1) / shard_name(0)).unlink()
    with pytest.raises(CheckpointError, match=re.escape(problem)):
        store.latest()


@pytest.mark.parametrize("content", [b"", b"[" * 100_000, b" " * (16 << 20) + b"{}"])
def test_a_damaged_manifest_is_passed_over_but_never_deleted(tmp_path, content):
    """Rank 0 writes a manifest atomically, so an empty, deep or oversized one is damage, not
    an interrupted write: it used to count as interrupted, and rank 0 deleted the epoch with
    its shards at the next start, without a word; with every manifest damaged the group
    started from scratch. Now it is passed over (logged), kept, and with nothing else usable
    the start is refused."""
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1, 1)
    write_epoch(store, 2, 1)
    (store.epoch_dir(2) / MANIFEST).write_bytes(content)
    store.remove_incomplete()
    assert store.epochs() == [2, 1] and store.latest()["epoch"] == 1
    (store.epoch_dir(1) / MANIFEST).write_bytes(content)
    store.remove_incomplete()
    assert store.epochs() == [2, 1]
    with pytest.raises(CheckpointError, match="not a manifest"):
        store.latest()
