"""Aligned checkpoints: an epoch counts only with its manifest and every shard it names."""

from __future__ import annotations

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
