"""The daemon against hostile input and failing storage, in process (MemorySource for Kafka).

Each test is one row of docs/daemon.md "Faults": a poisoned sample, a learner that raises or goes
non-finite, a full disk under the dead letters or the checkpoints, a dead-letter topic that
refuses a letter for good, a learner slower than the group's poll interval, an offset reset, and
a fuzz of the whole message path, without and with serving. The real-broker versions are in
tests/stream/cli/commands/test_serve_hostile.py.
"""

from __future__ import annotations

import base64
import errno
import json
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from learners import registry
from learners.base import Problem
from stream.daemon.checkpoint import CheckpointStore
from stream.daemon.config import ServeConfig
from stream.daemon.predict_http import predict_handler
from stream.daemon.serve import MAX_DEAD_LETTER_BACKLOG, Daemon
from stream.engine.guard import non_finite
from stream.sinks.dead_letter import FileDeadLetters, TopicDeadLetters
from stream.sinks.kafka_sink import SinkError
from stream.sources.serving_wire import (
    Labels,
    Requests,
    ServingDecoder,
    encode_label_json,
    encode_labels,
    encode_request_json,
    encode_requests,
)
from stream.sources.wire import Decoder, encode_binary, encode_json
from tests.support.clock import Clock
from tests.support.memory_source import MemorySource

PROBLEM = Problem(input_shape=(4,), num_classes=(3,))
POISON = 999.0


def _config(tmp_path, **overrides) -> ServeConfig:
    raw = {
        "kafka": {
            "bootstrap": "127.0.0.1:9", "topic": "samples", "max_poll_records": 5,
            "retry_backoff_seconds": 0.01, "retry_backoff_max_seconds": 0.02,
        },
        "problem": {"input_shape": [4], "num_classes": [3]},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": 8, "every_seconds": 3600},
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "loop": {"batch_size": 4},
    }  # fmt: skip
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return ServeConfig.model_validate(raw)


def _serving(
    tmp_path, broker, messages: list, name: str, max_poll_records: int = 20, **predictions
) -> tuple[Daemon, MemorySource]:
    """A daemon with ``[predictions]`` (topic ``<name>-predictions`` on ``broker``) reading
    ``messages`` from partition 0 in memory."""
    source = MemorySource({0: messages})
    config = _config(
        tmp_path,
        kafka={"bootstrap": broker.bootstrap, "max_poll_records": max_poll_records},
        predictions={"topic": f"{name}-predictions", **predictions},
    )
    return Daemon(config, source_factory=source.bind), source


def _valid(count: int, seed: int = 0) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """``count`` one-sample JSON messages; a sample's first feature is its index."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 4)).astype(np.float32)
    x[:, 0] = np.arange(count)
    y = rng.integers(0, 3, count)
    return [encode_json(x[i], int(y[i])) for i in range(count)], x, y


def _reference(x: np.ndarray, y: np.ndarray):
    learner = registry.create("nmc", PROBLEM)
    if len(y):
        learner.learn(
            torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long)
        )
    return learner


def _assert_same_model(learner, reference) -> None:
    for mine, theirs in zip(
        learner.sums + learner.counts, reference.sums + reference.counts, strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)


def _drain(daemon: Daemon, source: MemorySource, limit: int = 2000) -> None:
    """Step until every record is read and every letter stored, then once more: the empty poll
    after which the daemon learns what waits for a complete micro-batch."""
    daemon.connect()
    for _ in range(limit):
        daemon.step()
        if source.drained() and daemon.dead_letters.backlog == 0:
            daemon.step()
            return
    raise AssertionError("the source was not drained")


def _letters(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]


def _health(daemon: Daemon):
    return daemon.telemetry.health(60.0)


def _sample(daemon: Daemon, name: str, labels: dict | None = None) -> float | None:
    return daemon.telemetry.registry.get_sample_value(name, labels or {})


# -- poison ------------------------------------------------------------------------------------


def poison_trio(problem: Problem) -> list[tuple[str, bytes]]:
    d = problem.input_dim
    return [
        ("out_of_range", json.dumps({"x": [3e38] * d, "y": 0}).encode()),
        ("out_of_range", json.dumps({"x": [0.5] * d, "y": 0, "task": 2**31 - 1}).encode()),
        ("unknown_level", json.dumps({"x": [0.5] * d, "y": 0, "level": "A" * 900_000}).encode()),
    ]


def test_the_poison_trio_is_dead_lettered_with_short_details_and_the_rest_learned(tmp_path):
    messages, x, y = _valid(30)
    trio = poison_trio(PROBLEM)
    for at, (_, message) in zip((4, 13, 22), trio, strict=True):
        messages.insert(at, message)
    source = MemorySource({0: messages})
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    letters = _letters(tmp_path)
    assert [(d["offset"], d["reason"]) for d in letters] == [
        (4, "out_of_range"), (13, "out_of_range"), (22, "unknown_level")
    ]  # fmt: skip
    assert all(len(d["detail"]) <= 200 for d in letters)
    assert letters[2]["value_bytes"] > 900_000
    assert len(base64.b64decode(letters[2]["value_base64"])) == 256 * 1024
    assert daemon.loop.samples_seen == 30 and daemon.loop.current_task is None
    _assert_same_model(daemon.learner, _reference(x, y))


# -- the learner as a trust boundary -----------------------------------------------------------


def _faulty(daemon: Daemon, mode: str) -> None:
    """Make the daemon's learner raise, or go NaN, on a batch holding a POISON feature."""
    learner = daemon.learner

    def faulty(method):
        def call(x, y, level, iterations=1):
            result = method(x, y, level, iterations)
            if (x[:, 1] == POISON).any():
                if mode == "raise":
                    raise RuntimeError("Matrix is not positive definite")
                learner.sums[0][0, 0] = float("nan")
            return result

        return call

    # both ways in: the loop learns through predict_then_learn (nmc predicts fused)
    learner.learn = faulty(learner.learn)
    learner.predict_then_learn = faulty(learner.predict_then_learn)


def _assert_learner_errors(tmp_path, daemon, x, y, offsets, samples) -> None:
    """The dead letters are the messages at ``offsets``, refused as learner_error, and hold
    the inputs of ``samples`` (a sample's first feature is its index); the model learned the
    other samples of ``x``."""
    letters = _letters(tmp_path)
    assert {d["reason"] for d in letters} == {"learner_error"}
    assert sorted(d["offset"] for d in letters) == offsets
    decoder = Decoder(PROBLEM, max_abs=1e4)
    rejected = np.concatenate(
        [decoder.decode(base64.b64decode(d["value_base64"])).x for d in letters]
    )
    np.testing.assert_array_equal(np.sort(rejected[:, 0]), list(samples))
    kept = np.ones(len(y), dtype=bool)
    kept[list(samples)] = False
    _assert_same_model(daemon.learner, _reference(x[kept], y[kept]))


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_a_batch_the_learner_fails_on_is_undone_and_dead_lettered_as_learner_error(tmp_path, mode):
    messages, x, y = _valid(24, seed=3)
    x[9, 1] = POISON  # sample 9 sits in the third micro-batch (samples 8..11)
    messages[9] = encode_json(x[9], int(y[9]))
    source = MemorySource({0: messages})
    daemon = Daemon(_config(tmp_path, kafka={"max_poll_records": 24}), source_factory=source.bind)
    _faulty(daemon, mode)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    # Each letter holds its message's samples, ready to publish again.
    _assert_learner_errors(tmp_path, daemon, x, y, offsets=[8, 9, 10, 11], samples=range(8, 12))
    assert daemon.loop.samples_seen == 20
    assert _sample(daemon, "streamcl_invalid_messages_total", {"reason": "learner_error"}) == 4
    latest = CheckpointStore(tmp_path / "ckpt").latest()
    assert non_finite(latest.learner) is None and latest.meta["loop"]["samples_seen"] == 20


def test_a_finite_extreme_sample_is_dead_lettered_not_the_batch_after_it(tmp_path):
    """acil, ``messages.max_abs`` raised: a sample of 1e12 passes the wire's checks and every
    finiteness check, and leaves statistics the next batch's solve fails on. The daemon used to
    dead-letter that next batch, and every one after it, and checkpoint the poisoned state."""
    messages, x, y = _valid(24, seed=6)
    x[9, 1:] = 1e12  # sample 9 sits in the third micro-batch (samples 8..11)
    messages[9] = encode_json(x[9], int(y[9]))
    source = MemorySource({0: messages})
    config = _config(
        tmp_path,
        kafka={"max_poll_records": 24},
        learner={"name": "acil", "options": {"buffer_size": 24}},
        messages={"max_abs": 1e13},
    )
    daemon = Daemon(config, source_factory=source.bind)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    letters = _letters(tmp_path)
    assert [(d["reason"], d["offset"]) for d in letters] == [
        ("learner_error", o) for o in range(8, 12)
    ]
    assert "cannot predict" in letters[0]["detail"]
    assert daemon.loop.samples_seen == 20
    kept = np.ones(len(y), dtype=bool)
    kept[8:12] = False
    alone = registry.create("acil", PROBLEM, {"buffer_size": 24})
    alone.learn(
        torch.from_numpy(x[kept]), torch.from_numpy(y[kept]), torch.zeros(20, dtype=torch.long)
    )
    torch.testing.assert_close(daemon.learner.weights(), alone.weights(), rtol=1e-9, atol=1e-9)


# -- storage faults ----------------------------------------------------------------------------


class Faults:
    """``os.write`` that fails with ENOSPC (after writing half, as a full disk may) while on."""

    def __init__(self, error: int = errno.ENOSPC) -> None:
        self.on, self.error, self.failures = False, error, 0

    def __call__(self, fd: int, data: bytes) -> int:
        import os

        if self.on:
            self.failures += 1
            os.write(fd, data[: len(data) // 2])
            raise OSError(self.error, os.strerror(self.error))
        return os.write(fd, data)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_the_dead_letter_file_on_a_full_disk_keeps_letters_and_never_half_a_line(tmp_path, error):
    faults = Faults(error)
    sink = FileDeadLetters(tmp_path / "dead.jsonl", 64, write_bytes=faults)
    sink.write("t", 0, 1, b"a", "empty", "x")
    faults.on = True
    sink.write("t", 0, 2, b"b", "empty", "y")  # does not raise
    sink.write("t", 0, 3, b"c", "empty", "z")
    assert sink.backlog == 2 and faults.failures == 2
    assert [d["offset"] for d in _letters(tmp_path)] == [1]  # no partial line left
    with pytest.raises(OSError):
        sink.sync()
    faults.on = False
    sink.sync()
    sink.close()
    assert [d["offset"] for d in _letters(tmp_path)] == [1, 2, 3]


def test_a_full_disk_under_the_dead_letters_is_survived_reported_and_loses_nothing(tmp_path):
    messages, x, y = _valid(40, seed=4)
    bad = [i for i in range(40) if i % 5 == 2]
    for i in bad:
        messages[i] = b"not json"
    source = MemorySource({0: messages})
    config = _config(tmp_path, checkpoint={"unhealthy_after_failures": 2})
    daemon = Daemon(config, source_factory=source.bind)
    faults = Faults()
    daemon.dead_letters._write_bytes = faults
    faults.on = True
    daemon.connect()
    for _ in range(30):
        daemon.step()
        daemon.checkpoint_retry.next_try = 0  # no backoff wait in the test
    # Learning went on; no checkpoint could move past the undelivered letters.
    assert daemon.loop.samples_seen == 40 - len(bad)
    assert CheckpointStore(tmp_path / "ckpt").latest() is None
    assert _sample(daemon, "streamcl_storage_failures_total", {"what": "checkpoint"}) >= 2
    health = _health(daemon)
    assert not health.ok and health.state == "failing" and "checkpoint" in health.problems
    faults.on = False
    daemon.checkpoint()
    assert _health(daemon).ok
    daemon.close()
    assert [d["offset"] for d in _letters(tmp_path)] == bad
    latest = CheckpointStore(tmp_path / "ckpt").latest()
    assert latest.meta["offsets"] == {"0": 40}
    keep = np.setdiff1d(np.arange(40), bad)
    _assert_same_model(daemon.learner, _reference(x[keep], y[keep]))


def test_a_failing_checkpoint_is_retried_with_backoff_not_on_every_poll(tmp_path):
    messages, _, _ = _valid(60, seed=5)
    source = MemorySource({0: messages})
    config = _config(
        tmp_path,
        kafka={"retry_backoff_seconds": 3600, "retry_backoff_max_seconds": 7200},
        checkpoint={"every_samples": 4},
    )
    daemon = Daemon(config, source_factory=source.bind)
    attempts = []

    def full_disk(meta, state):
        attempts.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    write = daemon.store.write
    daemon.store.write = full_disk
    _drain(daemon, source)
    assert len(attempts) == 1  # then the backoff (an hour) holds further tries back
    assert _sample(daemon, "streamcl_storage_failures_total", {"what": "checkpoint"}) == 1
    assert _health(daemon).ok  # one failure is not yet unhealthy (unhealthy_after_failures=3)
    daemon.store.write = write
    daemon.checkpoint_retry.next_try = 0
    daemon.step()
    assert CheckpointStore(tmp_path / "ckpt").latest().meta["offsets"] == {"0": 60}
    daemon.close()


def test_too_many_waiting_dead_letters_pause_reading_until_they_are_stored(tmp_path):
    count = MAX_DEAD_LETTER_BACKLOG + 20
    source = MemorySource({0: [b"not json"] * count + _valid(8)[0]})
    daemon = Daemon(_config(tmp_path, kafka={"max_poll_records": 100}), source_factory=source.bind)
    faults = Faults()
    daemon.dead_letters._write_bytes = faults
    faults.on = True
    daemon.connect()
    for _ in range(40):
        daemon.step()
    assert daemon.dead_letters.backlog == MAX_DEAD_LETTER_BACKLOG  # reading stopped there
    assert daemon.positions == {0: MAX_DEAD_LETTER_BACKLOG}
    assert source.paused and source.keep_alives > 0  # still in the group
    faults.on = False
    daemon.dead_letter_retry.next_try = 0
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    assert not source.paused
    assert [d["offset"] for d in _letters(tmp_path)] == list(range(count))
    assert daemon.loop.samples_seen == 8


class RefusingSink:
    """A Kafka producer that refuses one key for good and takes the rest."""

    def __init__(self, refused: bytes) -> None:
        self.refused, self.sent = refused, []

    def send(self, topic, value, partition=None, key=None, headers=None):
        if key == self.refused:
            raise SinkError("MSG_SIZE_TOO_LARGE (test)", permanent=True)
        self.sent.append(key)

    def flush(self, timeout=60.0):
        """Everything sent is delivered."""

    def close(self):
        """Nothing held."""


def test_a_dead_letter_the_topic_refuses_for_good_is_spilled_and_never_blocks_checkpoints(
    tmp_path,
):
    messages, _, _ = _valid(12, seed=6)
    messages[3] = b"not json"
    messages[7] = b"[]"
    source = MemorySource({0: messages})
    config = _config(
        tmp_path,
        dead_letter={"file": None, "topic": "samples.dead"},
        checkpoint={"every_samples": 4},
    )
    sink = RefusingSink(refused=b"samples:0:7")
    daemon = Daemon(config, source_factory=source.bind)
    assert isinstance(daemon.dead_letters, TopicDeadLetters)
    daemon.dead_letters._open_sink = lambda: sink
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    assert sink.sent == [b"samples:0:3"]
    spill = tmp_path / "ckpt" / "dead-letters-spill.jsonl"
    [spilled] = [json.loads(line) for line in spill.read_text().splitlines()]
    assert (spilled["offset"], spilled["reason"]) == (7, "wrong_type")
    assert _sample(daemon, "streamcl_dead_letters_spilled_total") == 1
    assert CheckpointStore(tmp_path / "ckpt").latest().meta["offsets"] == {"0": 12}


# -- slow learners -----------------------------------------------------------------------------


def test_a_learner_slower_than_the_poll_interval_keeps_the_consumer_in_its_group(tmp_path):
    messages, x, y = _valid(12, seed=7)
    source = MemorySource({0: messages})
    group = {
        "max_poll_interval_ms": 200, "session_timeout_ms": 150, "heartbeat_interval_ms": 50,
        "max_poll_records": 12,
    }  # fmt: skip
    daemon = Daemon(_config(tmp_path, kafka=group), source_factory=source.bind)
    polled_while_learning = []

    def slow(method):
        def call(*args):
            time.sleep(0.2)  # four keep-alive intervals of 0.05 s
            polled_while_learning.append(source.keep_alives)
            return method(*args)

        return call

    # both ways in: the loop learns through predict_then_learn (nmc predicts fused)
    daemon.learner.learn = slow(daemon.learner.learn)
    daemon.learner.predict_then_learn = slow(daemon.learner.predict_then_learn)
    _drain(daemon, source)
    daemon.close()
    assert polled_while_learning[-1] >= 3 and not source.paused
    _assert_same_model(daemon.learner, _reference(x, y))


# -- the consumer group ------------------------------------------------------------------------


class _Withheld(MemorySource):
    """Partitions the group does not give this consumer until ``withhold`` is cleared (a topic
    not made yet, another member holding them, a group stuck rebalancing)."""

    withhold = True

    def poll(self, max_records: int, timeout: float) -> list:
        if self.withhold and not self.failing_polls:
            return []
        return super().poll(max_records, timeout)


def test_a_daemon_the_group_gives_no_partition_is_failing_until_it_gets_one(tmp_path):
    messages, x, y = _valid(8, seed=9)
    source = _Withheld({0: messages})
    config = _config(tmp_path, kafka={"group": "g1"}, metrics={"stall_seconds": 5})
    daemon = Daemon(config, source_factory=source.bind)
    clock = Clock()
    daemon.partition_watch.clock = clock
    # patience: a session timeout and two rebalance timeouts (10 s + 2 x 30 s by default),
    # or the health stall time where that is longer
    assert daemon.partition_watch.patience == 70.0
    daemon.connect()
    daemon.step()
    assigned = {"topic": "samples"}
    assert _sample(daemon, "streamcl_assigned_partitions", assigned) == 0
    clock.advance(69)
    daemon.step()
    assert _health(daemon).ok  # a join may take this long
    # A broker outage is not time without partitions: the wait starts again after it.
    source.failing_polls = 1
    daemon.step()
    clock.advance(2)
    daemon.step()
    assert _health(daemon).ok
    clock.advance(71)
    daemon.step()
    health = _health(daemon)
    assert health.state == "failing"
    assert (
        "no partition of topic 'samples' assigned for 71 s (consumer group 'g1')"
        in (health.problems["partitions"])
    )
    source.withhold = False
    _drain(daemon, source)
    assert _health(daemon).ok and not _health(daemon).problems
    assert _sample(daemon, "streamcl_assigned_partitions", assigned) == 1
    daemon.close()
    _assert_same_model(daemon.learner, _reference(x, y))


# -- offset resets -----------------------------------------------------------------------------


def test_a_recreated_topic_is_an_offset_reset_logged_counted_and_learned_from_its_start(tmp_path):
    old, x_old, y_old = _valid(20, seed=8)
    source = MemorySource({0: old})
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    new, x_new, y_new = _valid(6, seed=9)
    source.partitions[0] = new  # the topic deleted and created again, with 6 records
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    reset = {"topic": "samples", "partition": "0"}
    assert _sample(daemon, "streamcl_offset_resets_total", reset) == 1
    assert daemon.positions == {0: 6} and daemon.loop.samples_seen == 26
    both = (np.concatenate([x_old, x_new]), np.concatenate([y_old, y_new]))
    _assert_same_model(daemon.learner, _reference(*both))


def test_a_redelivery_is_not_an_offset_reset(tmp_path):
    messages, _, _ = _valid(10, seed=11)
    source = MemorySource({0: messages})
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    source.positions[0] = 2
    _drain(daemon, source)
    daemon.close()
    assert daemon.loop.samples_seen == 10
    # exported from the partition's assignment on, at 0
    reset = {"topic": "samples", "partition": "0"}
    assert _sample(daemon, "streamcl_offset_resets_total", reset) == 0


# -- fuzz of the whole message path ------------------------------------------------------------

VALID = st.builds(
    lambda x, y, task: encode_json(x, y, task=task),
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=4),
    st.integers(0, 2),
    st.none() | st.integers(0, 3),
)
BINARY = st.builds(
    lambda n, seed: encode_binary(
        np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32),
        np.random.default_rng(seed).integers(0, 3, n),
    ),
    st.integers(1, 5),
    st.integers(0, 100),
)
EXTREME = st.builds(
    lambda v, y, level, task: json.dumps(
        {"x": [v, 0.5, 0.5, 0.5], "y": y, "level": level, "task": task}
    ).encode(),
    st.sampled_from([3e38, -3e38, 1e7, 1e308, 0.0, 1e-45]),
    st.sampled_from([0, 2, 3, -1, 2**31, 2**63, 1.5, "1", None]),
    st.sampled_from([0, 1, "label", "A" * 5000, None, -1]),
    st.sampled_from([0, 7, 2**31 - 1, -1, None, 10**20]),
)
MESSAGE = st.one_of(
    VALID, BINARY, EXTREME, st.binary(max_size=64), st.none(),
    st.builds(lambda m, at, b: m[:at] + bytes([b]) + m[at + 1 :], BINARY, st.integers(0, 60),
              st.integers(0, 255)),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(partitions=st.lists(st.lists(MESSAGE, max_size=12), min_size=1, max_size=2))
def test_fuzzed_topics_never_stop_the_daemon_and_every_record_is_learned_or_dead_lettered(
    tmp_path_factory, partitions
):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    source = MemorySource(dict(enumerate(partitions)))
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    decoder = Decoder(PROBLEM)
    expected_samples, expected_letters = 0, []
    for p, values in enumerate(partitions):
        for offset, value in enumerate(values):
            try:
                expected_samples += len(decoder.decode(value))
            except ValueError:
                expected_letters.append((p, offset))
    if any(partitions):
        _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    letters = _letters(tmp_path) if (tmp_path / "dead.jsonl").exists() else []
    assert sorted((d["partition"], d["offset"]) for d in letters) == sorted(expected_letters)
    assert daemon.loop.samples_seen == expected_samples
    assert non_finite(daemon.learner.state_dict()) is None
    assert all(len(d["detail"]) <= 200 for d in letters)
    if any(partitions):
        latest = CheckpointStore(tmp_path / "ckpt").latest()
        assert latest.meta["offsets"] == {str(p): len(v) for p, v in enumerate(partitions) if v}


@pytest.mark.kafka
def test_a_joined_label_batch_the_learner_fails_on_is_undone_and_dead_lettered(
    tmp_path, kafka_broker
):
    """The serving path is guarded as the labelled one is: a batch of joined labels that the
    learner fails on is undone and its samples dead-lettered (per label message) as
    learner_error; the requests, labels and labelled samples around it are learned."""
    _, x, y = _valid(12, seed=12)
    x[5, 1] = POISON  # the second batch of joined labels holds it (samples 4..7)
    messages = [encode_requests(x[:8], np.arange(8))]
    messages += [encode_label_json(i, int(y[i])) for i in range(8)]  # offsets 1..8
    messages += [encode_json(x[i], int(y[i])) for i in range(8, 12)]
    daemon, source = _serving(tmp_path, kafka_broker, messages, "guarded")
    _faulty(daemon, "raise")
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    # the label messages of samples 4..7
    _assert_learner_errors(tmp_path, daemon, x, y, offsets=[5, 6, 7, 8], samples=range(4, 8))
    assert daemon.loop.samples_seen == 8
    latest = CheckpointStore(tmp_path / "ckpt").latest()
    assert latest.meta["loop"]["samples_seen"] == 8


@pytest.mark.kafka
def test_a_request_the_learner_cannot_predict_is_dead_lettered_and_the_daemon_goes_on(
    tmp_path, kafka_broker
):
    """A request whose prediction raises is refused alone: its message is dead-lettered as
    learner_error (as it came, ready to publish again), nothing is published or kept for it,
    and the requests, labels and labelled samples after it are served and learned. Before, the
    error left the daemon, which after a restart read the same request again."""
    _, x, y = _valid(8, seed=21)
    x[4, 1] = POISON
    poisoned = encode_requests(x[4:5], np.array([4]))
    messages = [encode_requests(x[:4], np.arange(4)), poisoned]  # offsets 0, 1
    messages += [encode_label_json(i, int(y[i])) for i in range(5)]  # offsets 2..6
    messages += [encode_json(x[i], int(y[i])) for i in range(5, 8)]  # offsets 7..9
    daemon, source = _serving(tmp_path, kafka_broker, messages, "unpredictable", http=True)
    predict = daemon.learner.predict

    def faulty(inputs, level=None):
        if (inputs[:, 1] == POISON).any():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return predict(inputs, level)

    daemon.learner.predict = faulty
    _drain(daemon, source)
    daemon.checkpoint()
    letters = _letters(tmp_path)
    assert [(d["offset"], d["reason"]) for d in letters] == [(1, "learner_error")]
    assert "illegal memory access" in letters[0]["detail"]
    assert base64.b64decode(letters[0]["value_base64"]) == poisoned
    assert _sample(daemon, "streamcl_invalid_messages_total", {"reason": "learner_error"}) == 1
    serving = daemon.predictions.serving
    assert serving.predictions == 4 and serving.unmatched == 1  # label 4 has no request
    assert daemon.loop.samples_seen == 7
    keep = [0, 1, 2, 3, 5, 6, 7]
    _assert_same_model(daemon.learner, _reference(x[keep], y[keep]))
    # POST /predict: the same failure is a 500 that says why, counted, and the daemon serves on
    handler = predict_handler(daemon)
    status, body = handler(json.dumps({"samples": [{"x": x[4].tolist()}]}).encode())
    assert status == 500 and json.loads(body)["error"] == "learner_error"
    assert _sample(daemon, "streamcl_predict_http_errors_total", {"reason": "learner_error"}) == 1
    status, body = handler(json.dumps({"samples": [{"x": x[0].tolist()}]}).encode())
    assert status == 200
    daemon.close()


@pytest.mark.kafka
def test_a_binary_label_batch_joins_as_its_json_labels_and_a_mangled_one_is_dead_lettered(
    tmp_path, kafka_broker
):
    """One binary message of labels for eight requests learns the model that eight JSON labels
    learn (same order, same served predictions); a truncated one is refused whole, and an
    id that no request waits for is unmatched, as in JSON."""
    _, x, y = _valid(8, seed=31)
    ids = np.arange(8)

    def serve(labels: list[bytes], name: str) -> Daemon:
        messages = [encode_requests(x, ids), *labels]
        daemon, source = _serving(tmp_path / name, kafka_broker, messages, name)
        _drain(daemon, source)
        daemon.checkpoint()
        daemon.close()
        return daemon

    mangled = encode_labels(ids[:2], y[:2])[:-1]
    binary = serve([mangled, encode_labels(np.append(ids, 99), np.append(y, 0))], "binary")
    json_labels = serve([encode_label_json(int(i), int(y[i])) for i in ids], "json")
    _assert_same_model(binary.learner, _reference(x, y))
    _assert_same_model(json_labels.learner, _reference(x, y))
    assert binary.loop.prequential.cumulative == json_labels.loop.prequential.cumulative
    assert binary.loop.samples_seen == 8 and binary.predictions.serving.unmatched == 1
    letters = _letters(tmp_path / "binary")
    assert [(d["offset"], d["reason"]) for d in letters] == [(1, "truncated")]


# -- fuzz of the serving path ------------------------------------------------------------------

IDS = st.integers(0, 6)  # few ids: requests repeat, labels find or miss them
REQUEST = st.one_of(
    st.builds(
        lambda x, i: encode_request_json(np.array(x, np.float32), id=i),
        st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=4),
        st.none() | IDS,
    ),
    st.builds(
        lambda ids, seed: encode_requests(
            np.random.default_rng(seed).normal(size=(len(ids), 4)).astype(np.float32),
            np.array(ids),
        ),
        st.lists(IDS, min_size=1, max_size=4),
        st.integers(0, 100),
    ),
)
LABEL = st.one_of(
    st.builds(encode_label_json, IDS, st.integers(0, 3)),
    st.builds(
        lambda pairs: encode_labels(
            np.array([i for i, _ in pairs]), np.array([c for _, c in pairs])
        ),
        st.lists(st.tuples(IDS, st.integers(0, 2)), min_size=1, max_size=4),
    ),
)
SERVED = st.one_of(
    REQUEST, LABEL, VALID, BINARY,
    st.builds(lambda m, at, b: m[:at] + bytes([b]) + m[at + 1 :], LABEL | REQUEST,
              st.integers(0, 60), st.integers(0, 255)),
)  # fmt: skip


def _expected_serving(values: list[bytes]) -> tuple[int, int, int, int, list[int]]:
    """What the serving daemon must do with one partition's records, in order: request
    samples answered, samples learned (labelled or joined), labels unmatched, and the offsets
    it must refuse."""
    decoder = ServingDecoder(Decoder(PROBLEM, max_abs=1e6))
    pending: set[int] = set()
    answered = learned = unmatched = 0
    refused = []
    for offset, value in enumerate(values):
        try:
            message = decoder.decode(value)
        except ValueError:
            refused.append(offset)
            continue
        if isinstance(message, Requests):
            answered += len(message)
            pending.update(int(i) for i in message.ids if i >= 0)
        elif isinstance(message, Labels):
            for i in message.ids.tolist():
                if i in pending:
                    pending.remove(i)
                    learned += 1
                else:
                    unmatched += 1
        else:
            learned += len(message)
    return answered, learned, unmatched, len(refused), refused


@pytest.mark.kafka
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(SERVED, min_size=1, max_size=14))
def test_a_fuzzed_serving_topic_never_stops_the_daemon_and_every_record_is_accounted_for(
    tmp_path_factory, kafka_broker, values
):
    """Requests, labels (JSON and binary batches), labelled samples and mangled bytes, in any
    order: every request sample is answered, every label joins its pending request or is
    unmatched, every labelled or joined sample is learned, every other record dead-lettered."""
    tmp_path = tmp_path_factory.mktemp("serving-fuzz")
    daemon, source = _serving(tmp_path, kafka_broker, values, "fuzzed", max_poll_records=4)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    answered, learned, unmatched, _, refused = _expected_serving(values)
    serving = daemon.predictions.serving
    assert (serving.predictions, daemon.loop.samples_seen, serving.unmatched) == (
        answered,
        learned,
        unmatched,
    )
    letters = _letters(tmp_path) if (tmp_path / "dead.jsonl").exists() else []
    assert sorted(d["offset"] for d in letters) == refused


def test_a_flood_of_small_invalid_messages_logs_a_burst_and_a_sum_not_a_line_each(tmp_path):
    """Each invalid message was an info line: 88 MB of log for 365k small messages, where
    the dead-letter files stay within their bound. The counters keep every one."""
    valid, x, y = _valid(8, seed=43)
    source = MemorySource({0: valid + [b"not json"] * 200})
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    with capture_logs() as logs:
        _drain(daemon, source)
        daemon.close()
    assert sum(entry["event"] == "invalid_message" for entry in logs) == 20
    summaries = [entry for entry in logs if entry["event"] == "log_lines_suppressed"]
    assert [(s["suppressed_event"], s["suppressed"]) for s in summaries] == [
        ("invalid_message", 180)
    ]
    assert _sample(daemon, "streamcl_invalid_messages_total", {"reason": "undecodable"}) == 200
    assert len(_letters(tmp_path)) == 200
    _assert_same_model(daemon.learner, _reference(x, y))


def test_a_flood_of_invalid_messages_is_rotated_within_its_bound_and_learning_goes_on(tmp_path):
    """Megabyte-sized garbage, most of the topic: the dead-letter files stay within their bound
    (files + 1 of file_bytes, plus a letter), every valid sample is learned, and the letters of
    the newest files are the newest messages."""
    valid, x, y = _valid(12, seed=41)
    garbage = [bytes([7]) * 900_000 for _ in range(60)]
    messages = [m for pair in zip(valid, garbage[:12], strict=True) for m in pair] + garbage[12:]
    source = MemorySource({0: messages})
    config = _config(tmp_path, dead_letter={"file_bytes": 1 << 20, "files": 2})
    daemon = Daemon(config, source_factory=source.bind)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    letters = sorted(tmp_path.glob("dead.jsonl*"))
    assert [p.name for p in letters][:1] == ["dead.jsonl"] and len(letters) == 3
    letter = 256 * 1024 * 4 // 3 + 400  # base64 of a value cut to 256 KiB, and the rest
    assert sum(p.stat().st_size for p in letters) <= 3 * ((1 << 20) + letter)
    assert sum(daemon.invalid.values()) == 60 and daemon.loop.samples_seen == 12
    _assert_same_model(daemon.learner, _reference(x, y))
    newest = [
        json.loads(line)["offset"] for line in (tmp_path / "dead.jsonl").read_text().splitlines()
    ]
    assert newest == list(range(len(messages) - len(newest), len(messages)))
