"""Outside files that are not regular files are refused at once: a FIFO would make a reader
wait for a writer forever (a daemon hung at its start), a device such as /dev/zero reads
without end, a directory fails deep inside a reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from learners.state.learner_state import LearnerState
from stream.cli.config_file import ConfigFileError, load_config_file
from stream.daemon.aligned_checkpoint import MANIFEST, AlignedCheckpoints, shard_name
from stream.daemon.checkpoint import CheckpointError, CheckpointStore
from stream.data.regular_file import FileTooLarge, NotRegularFile, open_regular, read_regular
from stream.data.secret_file import read_secret_file
from stream.runs.report import ReportError, load_results
from stream.runs.served_model import ModelFileError, from_file

# A regression would wait on the FIFO: fail instead of hanging the suite.
pytestmark = pytest.mark.timeout(20)


def not_regular(path: Path, kind: str) -> Path:
    """``path`` made a FIFO, a directory, or a link to a character device."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/null")
    return path


KINDS = ("fifo", "directory", "device")


@pytest.mark.parametrize("kind", KINDS)
def test_what_is_not_a_regular_file_is_refused_without_waiting(tmp_path, kind):
    path = not_regular(tmp_path / "x", kind)
    with pytest.raises(NotRegularFile, match="not a regular file") as refused:
        open_regular(path)
    assert refused.value.filename == str(path)


def test_a_regular_file_is_read_whole_and_bounded(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"12345")
    assert read_regular(path, 5) == read_regular(path, None) == b"12345"
    with pytest.raises(FileTooLarge, match="5 bytes, more than 4"):
        read_regular(path, 4)
    link = tmp_path / "link"
    link.symlink_to(path)
    assert read_regular(link, None) == b"12345"


def state(value: float) -> LearnerState:
    return LearnerState({"w": torch.full((2,), value)}, {})


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_that_is_not_a_file_is_skipped_for_the_one_before(tmp_path, kind):
    store = CheckpointStore(tmp_path)
    store.write({"step": 1}, state(1.0))
    not_regular(tmp_path / "checkpoint-000000000002.sclckpt", kind)
    assert store.latest().meta["step"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_directory_with_only_such_a_file_is_an_error(tmp_path, kind):
    not_regular(tmp_path / "checkpoint-000000000001.sclckpt", kind)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(tmp_path).latest()


def write_epoch(store: AlignedCheckpoints, epoch: int) -> None:
    entries = [store.write_shard(epoch, 0, {"offsets": {"0": epoch}}, state(float(epoch)))]
    store.write_manifest(epoch, 1, entries, {"0": epoch})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("replaced", [MANIFEST, shard_name(0)])
def test_an_epoch_whose_manifest_or_shard_is_not_a_file_falls_back(tmp_path, kind, replaced):
    store = AlignedCheckpoints(tmp_path)
    write_epoch(store, 1)
    write_epoch(store, 2)
    path = store.epoch_dir(2) / replaced
    path.unlink()
    not_regular(path, kind)
    assert store.latest()["epoch"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_secret_config_results_or_model_file_that_is_not_a_file_is_one_clear_error(
    tmp_path, kind
):
    secret = not_regular(tmp_path / "key", kind)
    with pytest.raises(ValueError, match="key file: not a regular file"):
        read_secret_file(secret, "key file", ValueError)
    config = not_regular(tmp_path / "serve.toml", kind)
    with pytest.raises(ConfigFileError, match="not a regular file"):
        load_config_file(config)
    results = not_regular(tmp_path / "results.json", kind)
    if kind != "directory":  # a directory is looked into for its results.json
        with pytest.raises(ReportError, match="not a regular file"):
            load_results(results)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    not_regular(tmp_path / "model.json", kind)
    with pytest.raises(ModelFileError):
        from_file(model)


def test_a_results_file_past_its_bound_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr("stream.runs.report.MAX_RESULTS_BYTES", 10)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"learner": "nmc", "padding": "x" * 20}))
    with pytest.raises(ReportError, match="more than 10"):
        load_results(path)
