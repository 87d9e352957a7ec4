"""The daemon across restarts: metrics restored, history exact, checkpoints trusted and locked.

In process, over tests/stream/daemon/test_serve.py's in-memory source; the real-process test
(SIGTERM, restart, /metrics before any new message) is in tests/stream/cli/commands/test_serve.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from learners.state.learner_state import LearnerState
from stream.cli import main as cli
from stream.daemon.checkpoint import CheckpointLocked, CheckpointStore, encode
from stream.daemon.config import ServeConfig, ServeConfigError
from stream.daemon.evaluation_history import read_history
from stream.daemon.serve import Daemon
from stream.data.datasets import as_float_tensor, load_dataset
from stream.sources.wire import encode_binary
from tests.stream.daemon.test_serve import MemorySource, _drain
from tests.support.checkpoint_gadgets import CountingServer, download_gadget, system_gadget

KEY = b"a checkpoint key of 32 bytes...."


def _digits_topic(messages: int, per_message: int = 8) -> dict[int, list[bytes | None]]:
    dataset = load_dataset("digits")
    x = as_float_tensor(dataset.X_train).numpy()
    rows = np.arange(messages * per_message) % len(x)
    return {
        0: [
            encode_binary(x[rows[i : i + per_message]], dataset.y_train[rows[i : i + per_message]])
            for i in range(0, len(rows), per_message)
        ]
    }


def _config(tmp_path, learner=None, **overrides) -> ServeConfig:
    raw = {
        "kafka": {"bootstrap": "127.0.0.1:9", "topic": "samples", "max_poll_records": 5},
        "evaluation": {"dataset": "digits"},
        "learner": learner or {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": 80, "every_seconds": 3600},
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "loop": {"batch_size": 8, "eval_period": 40},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return ServeConfig.model_validate(raw)


def _value(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.telemetry.registry.get_sample_value(name, labels)


def _run(tmp_path, partitions, key=None, **config) -> Daemon:
    source = MemorySource(partitions)
    daemon = Daemon(_config(tmp_path, **config), source_factory=source.bind, checkpoint_key=key)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    return daemon


SERIES = [
    ("streamcl_samples_total", {"learner": "nmc"}),
    ("streamcl_anytime_accuracy", {"learner": "nmc", "level": "all"}),
    ("streamcl_auc_accuracy", {"learner": "nmc", "level": "label"}),
    ("streamcl_forgetting", {"learner": "nmc", "level": "label"}),
    ("streamcl_prequential_accuracy", {"learner": "nmc", "window": "cumulative"}),
    ("streamcl_seen_classes", {"level": "label"}),
    ("streamcl_last_checkpoint_timestamp_seconds", {}),
]


def test_every_series_is_restored_from_the_checkpoint_before_any_message(tmp_path):
    first = _run(tmp_path, _digits_topic(40))
    before = {name: _value(first, name, **labels) for name, labels in SERIES}
    assert before["streamcl_samples_total"] == 320 and before["streamcl_anytime_accuracy"] > 0.5
    restarted = Daemon(_config(tmp_path), source_factory=MemorySource({0: []}).bind)
    try:
        after = {name: _value(restarted, name, **labels) for name, labels in SERIES}
    finally:
        restarted.close()
    assert after == before


def test_history_has_every_evaluation_once_across_a_crash_and_checkpoints_stay_flat(tmp_path):
    partitions = _digits_topic(60)
    source = MemorySource(partitions)
    # windows and recent evaluations that fill before the first checkpoint: flat from the start
    config = _config(tmp_path, loop={"recent_evaluations": 2, "prequential_windows": [16]})
    daemon = Daemon(config, source_factory=source.bind)
    daemon.connect()
    sizes = []
    for _ in range(9):  # 9 polls of 5 messages: checkpoints at 80, 160, 240, 320 samples
        daemon.step()
        files = CheckpointStore(tmp_path / "ckpt").files()
        if files and (not sizes or sizes[-1][0] != files[0][0]):
            sizes.append((files[0][0], files[0][1].stat().st_size))
    daemon.close()  # a crash after evaluations that no checkpoint covers
    source = MemorySource(partitions)
    restarted = Daemon(config, source_factory=source.bind)
    _drain(restarted, source)
    restarted.checkpoint()
    restarted.close()
    lines = list(read_history(tmp_path / "ckpt" / "history"))
    assert [line["samples_seen"] for line in lines] == list(range(40, 481, 40))
    assert {line["kind"] for line in lines} == {"periodic"}
    assert len(sizes) >= 3
    # the checkpoint does not grow with the evaluations made (JSON digits vary a little)
    assert max(s for _, s in sizes) <= 1.02 * min(s for _, s in sizes), sizes


def test_a_checkpoint_with_a_valid_seal_but_unusable_content_falls_back(tmp_path):
    first = _run(tmp_path, _digits_topic(10))
    store = CheckpointStore(tmp_path / "ckpt")
    good = store.latest()
    unusable = {**good.meta, "loop": {"samples_seen": "many"}}
    store.write(unusable, good.learner)
    future = {**good.meta, "streamcl_checkpoint": 99}
    store.write(future, good.learner)
    restarted = Daemon(_config(tmp_path), source_factory=MemorySource({0: []}).bind)
    restarted.close()
    assert restarted.positions == first.positions
    assert restarted.loop.samples_seen == first.loop.samples_seen == 80


def test_a_format_1_checkpoint_is_resumed_with_its_metrics(tmp_path):
    from tests.stream.daemon.test_checkpoint import format_1

    # every evaluation kept in "recent": its list is the whole history a format-1 state held
    everything = {"recent_evaluations": 1000}
    first = _run(tmp_path, _digits_topic(40), loop=everything)
    before = {name: _value(first, name, **labels) for name, labels in SERIES}
    store = CheckpointStore(tmp_path / "ckpt")
    latest = store.latest()
    meta = json.loads(json.dumps(latest.meta))
    evaluations = meta["loop"].pop("evaluations")
    meta["loop"].update(
        curve=[e for kind, e in evaluations["recent"] if kind == "periodic"],
        task_ends=[e for kind, e in evaluations["recent"] if kind == "task_end"],
        best_class_accuracy=evaluations["best_class_accuracy"],
        last_evaluation=evaluations["last"],
    )
    meta["streamcl_checkpoint"] = 1
    del meta["history_position"]
    for _, path in store.files():
        path.unlink()
    (tmp_path / "ckpt" / "checkpoint-000000000001.sclckpt").write_bytes(
        format_1(meta, latest.learner)
    )
    resumed = Daemon(_config(tmp_path, loop=everything), source_factory=MemorySource({0: []}).bind)
    resumed.close()
    after = {name: _value(resumed, name, **labels) for name, labels in SERIES}
    assert after == before
    assert resumed.loop.summary() == first.loop.summary()
    assert resumed.positions == first.positions


def test_a_second_daemon_on_the_directory_exits_2_with_one_line(tmp_path, capsys):
    config = _config(tmp_path)
    holder = Daemon(config, source_factory=MemorySource({0: []}).bind)
    try:
        with pytest.raises(CheckpointLocked):
            Daemon(config)
        path = tmp_path / "serve.json"
        path.write_text(config.model_dump_json())
        assert cli.main(["serve", "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another streamcl daemon" in err[0]
    finally:
        holder.close()


def test_a_second_daemon_on_the_dead_letter_file_exits_2_with_one_line(tmp_path, capsys):
    """Its own checkpoint.dir but the same dead_letter.file: a restart of either cut the file
    back to its own checkpoint, deleting the other's letters."""
    holder = Daemon(_config(tmp_path), source_factory=MemorySource({0: []}).bind)
    try:
        other = _config(tmp_path, checkpoint={"dir": str(tmp_path / "other")})
        path = tmp_path / "serve.json"
        path.write_text(other.model_dump_json())
        assert cli.main(["serve", "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "dead_letter.file" in err[0] and "in use" in err[0], err
    finally:
        holder.close()


def test_a_daemon_that_fails_to_start_lets_go_of_its_dead_letter_file(tmp_path, monkeypatch):
    """What its start opened stays closed: the file's lock held on would refuse the next try."""
    import stream.daemon.serve as serve

    def broken(*args, **kwargs):
        raise RuntimeError("failed after the dead-letter file was opened")

    with monkeypatch.context() as patched:
        patched.setattr(serve, "BrokerWatch", broken)
        with pytest.raises(RuntimeError, match="after the dead-letter file"):
            Daemon(_config(tmp_path), source_factory=MemorySource({0: []}).bind)
    Daemon(_config(tmp_path), source_factory=MemorySource({0: []}).bind).close()


RIVER = {"name": "river:naive_bayes.GaussianNB"}
DRIFT = {"drift": {"detector": "ADWIN"}}


@pytest.mark.parametrize("learner, loop", [(RIVER, {}), ({"name": "nmc"}, DRIFT)])
def test_state_holding_river_objects_needs_a_checkpoint_key(tmp_path, learner, loop):
    with pytest.raises(ServeConfigError, match="STREAMCL_CHECKPOINT_KEY"):
        Daemon(_config(tmp_path, learner=learner, loop=loop))
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def _plant(tmp_path, payload: bytes, section: str, key: bytes | None) -> None:
    """Rewrite the newest checkpoint with ``payload`` as its river models (``models``) or its
    drift detector (``drift``), sealed with ``key`` (None: what someone without it can do)."""
    import base64
    import hashlib

    store = CheckpointStore(tmp_path / "ckpt", key=KEY)
    good = store.latest()
    sealed = {"format": "streamcl-sealed-pickle-2", "sha256": hashlib.sha256(payload).hexdigest()}
    meta, tensors = json.loads(json.dumps(good.meta)), dict(good.learner.tensors)
    learner_meta = dict(good.learner.meta)
    if section == "models":
        tensors["models"] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        learner_meta["sealed"] = sealed
    else:
        meta["loop"]["drift"].update(detector=base64.b64encode(payload).decode(), sealed=sealed)
    meta["sequence"] = good.sequence + 1
    path = tmp_path / "ckpt" / f"checkpoint-{good.sequence + 1:012d}.sclckpt"
    path.write_bytes(encode(meta, LearnerState(tensors, learner_meta), key))


@pytest.mark.parametrize("gadget", ["download", "os.system"])
@pytest.mark.parametrize("leaked_key", [False, True], ids=["forged", "leaked-key"])
def test_a_planted_gadget_is_refused_without_writing_or_running_anything(
    tmp_path, gadget, leaked_key
):
    learner, loop, section = (
        (RIVER, {}, "models") if gadget == "download" else ({"name": "nmc"}, DRIFT, "drift")
    )
    _run(tmp_path, _digits_topic(10), key=KEY, learner=learner, loop=loop)
    target = tmp_path / "evil.pth"
    with CountingServer() as server:
        payload = (
            download_gadget(server.url, target) if gadget == "download" else system_gadget(target)
        )
        _plant(tmp_path, payload, section, KEY if leaked_key else None)
        before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").glob("checkpoint-*")}
        daemon = Daemon(
            _config(tmp_path, learner=learner, loop=loop),
            source_factory=MemorySource({0: []}).bind,
            checkpoint_key=KEY,
        )
        daemon.close()
        assert server.requests == 0
    assert not target.exists()
    # the planted checkpoint was skipped for the good one before it, and nothing was rewritten
    assert daemon.loop.samples_seen == 80
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").glob("checkpoint-*")} == before
