"""Checkpoint files: atomic writes, rotation, corruption detected and skipped, no pickle."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import stream.daemon.checkpoint as checkpoint_module
from learners.state.learner_state import LearnerState
from stream.daemon.checkpoint import (
    CheckpointError,
    CheckpointLocked,
    CheckpointStore,
    CorruptCheckpoint,
    decode,
    encode,
)


def _state(value: float) -> LearnerState:
    return LearnerState({"w": torch.full((3, 2), value, dtype=torch.float64)}, {"step": value})


def test_round_trip_keeps_tensors_and_json_exactly():
    meta = {"offsets": {"0": 12, "3": 7}, "loop": {"samples_seen": 40}}
    loaded_meta, state = decode(encode(meta, _state(0.1)))
    assert loaded_meta == meta
    assert torch.equal(state.tensors["w"], _state(0.1).tensors["w"]) and state.meta == {"step": 0.1}


def test_loading_never_unpickles(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.write({"offsets": {}}, _state(1.0))

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must not be unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert store.latest().meta["offsets"] == {}


def test_latest_is_the_newest_and_only_keep_are_kept(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(4):
        store.write({"step": step}, _state(step))
    assert [seq for seq, _ in store.files()] == [4, 3]
    latest = store.latest()
    assert latest.sequence == 4 and latest.meta["step"] == 3 and latest.meta["sequence"] == 4


def test_a_reader_beside_a_writer_that_prunes_what_it_listed_gets_the_newer_checkpoint(tmp_path):
    """``streamcl predict`` on a live daemon's directory: between the reader's listing and its
    read the daemon writes newer checkpoints and prunes every file listed. The reader takes the
    newest one instead of calling a directory of good checkpoints unusable."""
    writer = CheckpointStore(tmp_path, keep=2)
    for step in range(2):
        writer.write({"step": step}, _state(step))
    reader = CheckpointStore(tmp_path)
    listed = reader.files

    def listing_then_the_writer_moves_on():
        files = listed()
        if len(files) == 2 and files[0][0] == 2:
            for step in (2, 3):
                writer.write({"step": step}, _state(step))  # prunes checkpoints 1 and 2
        return files

    reader.files = listing_then_the_writer_moves_on  # type: ignore[method-assign]
    latest = reader.latest()
    assert latest is not None and latest.sequence == 4 and latest.meta["step"] == 3


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_sealed_checkpoint_whose_model_is_not_finite_is_skipped(tmp_path, value):
    """The seal says the bytes are those written, not that a daemon wrote them (a keyless store
    anyone may reseal): a model holding NaN or inf is refused like a damaged file."""
    store = CheckpointStore(tmp_path, keep=3)
    store.write({"step": 1}, _state(1.0))
    bad = _state(2.0)
    bad.tensors["w"][1, 0] = value
    store.write({"step": 2}, bad)
    with pytest.raises(CorruptCheckpoint, match="tensor 'w' holds NaN or inf"):
        decode(encode({"step": 2}, bad))
    assert store.latest().meta["step"] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_a_damaged_latest_falls_back_to_the_previous_good_one(tmp_path, damage):
    store = CheckpointStore(tmp_path, keep=3)
    store.write({"step": 1}, _state(1.0))
    newest = store.write({"step": 2}, _state(2.0))
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a checkpoint at all, but long enough to hold a header....")
    newest.write_bytes(bytes(data))
    latest = store.latest()
    assert latest.meta["step"] == 1 and torch.equal(
        latest.learner.tensors["w"], _state(1.0).tensors["w"]
    )
    # The next checkpoint never reuses the damaged one's number.
    assert store.write({"step": 3}, _state(3.0)).name.endswith("000000000003.sclckpt")
    assert store.latest().meta["step"] == 3


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.write({"step": 1}, _state(1.0))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        store.latest()


def test_an_interrupted_write_leaves_the_previous_checkpoint_and_is_cleaned_up(tmp_path):
    store = CheckpointStore(tmp_path)
    store.write({"step": 1}, _state(1.0))
    # What a crash between writing and renaming leaves behind.
    partial = encode({"step": 2}, _state(2.0))
    (tmp_path / ".checkpoint-000000000002.tmp").write_bytes(partial[:40])
    reopened = CheckpointStore(tmp_path)
    assert reopened.latest().meta["step"] == 1
    reopened.remove_interrupted_writes()
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_an_empty_directory_has_no_checkpoint(tmp_path):
    assert CheckpointStore(tmp_path / "new").latest() is None


def test_decode_names_the_problem():
    data = encode({"a": 1}, _state(1.0))
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        decode(data[:60] + bytes([data[60] ^ 1]) + data[61:], "x.sclckpt")
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        decode(data[:-3], "x.sclckpt")


KEY = b"0123456789abcdef0123456789abcdef"


def test_a_keyed_store_signs_and_reads_only_what_its_key_signed(tmp_path):
    keyed = CheckpointStore(tmp_path / "keyed", key=KEY)
    keyed.write({"step": 1}, _state(1.0))
    assert keyed.latest().meta["step"] == 1
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(tmp_path / "keyed", key=b"another key, also long enough").latest()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(tmp_path / "keyed").latest()
    unkeyed = CheckpointStore(tmp_path / "unkeyed")
    unkeyed.write({"step": 1}, _state(1.0))
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(tmp_path / "unkeyed", key=KEY).latest()


def test_the_seal_is_checked_before_anything_is_parsed(monkeypatch):
    forged = encode({"a": 1}, _state(1.0))  # a valid digest, no HMAC: what anyone can write
    parsed = []
    monkeypatch.setattr(checkpoint_module.json, "loads", lambda *a: parsed.append(a))
    monkeypatch.setattr(checkpoint_module, "state_from_bytes", lambda *a: parsed.append(a))
    with pytest.raises(CorruptCheckpoint, match="unsigned"):
        decode(forged, "x", key=KEY)
    signed = bytearray(encode({"a": 1}, _state(1.0), key=KEY))
    signed[-1] ^= 1
    with pytest.raises(CorruptCheckpoint, match="HMAC does not verify"):
        decode(bytes(signed), "x", key=KEY)
    # a header that claims the HMAC seal while carrying a digest
    claimed = bytearray(forged)
    claimed[8] = 1
    with pytest.raises(CorruptCheckpoint, match="HMAC does not verify"):
        decode(bytes(claimed), "x", key=KEY)
    assert parsed == []


def format_1(meta: dict, learner: LearnerState) -> bytes:
    """A checkpoint file as streamcl wrote them before checkpoint keys."""
    import hashlib
    import json
    import struct

    from learners.state.safetensors_io import state_to_bytes

    body, tensors = json.dumps(meta).encode(), state_to_bytes(learner)
    digest = hashlib.sha256(body + tensors).digest()
    return struct.pack("<8sQQ32s", b"SCLCKPT1", len(body), len(tensors), digest) + body + tensors


def test_a_format_1_checkpoint_is_read_by_a_keyless_store_only():
    data = format_1({"a": 1}, _state(1.0))
    meta, state = decode(data, "old.sclckpt")
    assert meta == {"a": 1} and torch.equal(state.tensors["w"], _state(1.0).tensors["w"])
    with pytest.raises(CorruptCheckpoint, match=r"format 1 .* is unsigned"):
        decode(data, "old.sclckpt", key=KEY)
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        decode(data[:-1] + bytes([data[-1] ^ 1]), "old.sclckpt")


def test_a_second_process_cannot_take_the_lock(tmp_path):
    first = CheckpointStore(tmp_path)
    first.lock()
    second = CheckpointStore(tmp_path)
    with pytest.raises(
        CheckpointLocked, match=rf"in use by another streamcl daemon \(pid {os.getpid()}\)"
    ):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_a_single_daemon_and_a_scaled_out_group_keep_off_each_others_directory(tmp_path):
    """Each locked only its own file (.lock, .lock.rank-N), so `serve` and `serve --workers 2`
    served the same topic from one directory at once, writing checkpoints and epochs beside
    each other and dead-lettering the same messages twice."""
    single = CheckpointStore(tmp_path)
    single.lock()
    with pytest.raises(
        CheckpointLocked,
        match=rf"in use by a single streamcl daemon \(pid {os.getpid()}\); stop it",
    ):
        CheckpointStore(tmp_path).lock(".lock.rank-0")
    single.unlock()
    ranks = [CheckpointStore(tmp_path) for _ in range(2)]
    for rank, store in enumerate(ranks):
        store.lock(f".lock.rank-{rank}")  # the ranks share the directory
    with pytest.raises(
        CheckpointLocked, match=r"in use by another streamcl daemon \(a scaled-out group"
    ):
        CheckpointStore(tmp_path).lock()
    with pytest.raises(CheckpointLocked, match="in use by another streamcl daemon"):
        CheckpointStore(tmp_path).lock(".lock.rank-1")  # a second group's rank 1
    for store in ranks:
        store.unlock()
    single.lock()
    single.unlock()
