"""The daemon's loop, in process, over an in-memory stand-in for the broker.

These tests drive the exact code ``streamcl serve`` runs; only the Kafka client is replaced by
``MemorySource``, which keeps the source contract (assign with resume offsets, poll in offset
order, redeliver when rewound). The real-broker tests are in tests/stream/cli/commands/test_serve.py.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.daemon.checkpoint import CheckpointError, CheckpointStore
from stream.daemon.config import ServeConfig
from stream.daemon.serve import Daemon
from stream.engine.event_loop import EventLoop
from stream.sources.batcher import micro_batches
from stream.sources.kafka_source import SourceError
from stream.sources.wire import Decoder, Samples, encode_binary, encode_json
from tests.support.malformed import malformed_messages
from tests.support.memory_source import MemorySource

PROBLEM = Problem(input_shape=(4,), num_classes=(3,))
MAX_BYTES = 2048


def _config(tmp_path, **overrides) -> ServeConfig:
    raw = {
        "kafka": {
            "bootstrap": "127.0.0.1:9", "topic": "samples", "max_poll_records": 3,
            "retry_backoff_seconds": 0.01, "retry_backoff_max_seconds": 0.02,
        },
        "problem": {"input_shape": [4], "num_classes": [3]},
        "learner": {"name": "nmc"},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": 5, "every_seconds": 3600},
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "messages": {"max_bytes": MAX_BYTES},
        "loop": {"batch_size": 4},
    }  # fmt: skip
    for section, values in overrides.items():
        raw[section].update(values)
    return ServeConfig.model_validate(raw)


def _topic(seed: int = 0):
    """Two partitions of valid messages (JSON and binary) with every malformed kind mixed in.

    Returns the partitions, the valid samples ``(x, y)`` and the expected ``(partition, offset,
    reason)`` dead letters. A sample's first feature is its id, so the audit can tell them apart.
    """
    rng = np.random.default_rng(seed)
    bad = malformed_messages(PROBLEM, MAX_BYTES)
    partitions: dict[int, list[bytes | None]] = {0: [], 1: []}
    xs, ys, letters = [], [], []
    next_id = 0
    for i in range(24):
        partition = i % 2
        if i % 3 == 2 and bad:
            reason, message = bad.pop()
            letters.append((partition, len(partitions[partition]), reason))
            partitions[partition].append(message)
            continue
        n = 1 if i % 2 else 3
        x = rng.normal(size=(n, 4)).astype(np.float32)
        x[:, 0] = np.arange(next_id, next_id + n)
        y = rng.integers(0, 3, n)
        next_id += n
        message = encode_json(x[0], int(y[0])) if n == 1 else encode_binary(x, y)
        partitions[partition].append(message)
        xs.append(x)
        ys.append(y)
    for reason, message in bad:
        letters.append((1, len(partitions[1]), reason))
        partitions[1].append(message)
    return partitions, np.concatenate(xs), np.concatenate(ys), letters


def _reference(x: np.ndarray, y: np.ndarray):
    learner = registry.create("nmc", PROBLEM)
    learner.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    return learner


def _assert_same_model(learner, reference) -> None:
    for mine, theirs in zip(
        learner.sums + learner.counts, reference.sums + reference.counts, strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)


def _drain(daemon: Daemon, source: MemorySource, limit: int = 1000) -> None:
    """Step until every record is read, then once more: the empty poll after which the daemon
    learns what waits for a complete micro-batch."""
    daemon.connect()
    for _ in range(limit):
        daemon.step()
        if source.drained():
            daemon.step()
            return
    raise AssertionError("the source was not drained")


def _letters(tmp_path):
    lines = (tmp_path / "dead.jsonl").read_text().splitlines()
    return [(d["partition"], d["offset"], d["reason"]) for d in map(json.loads, lines)]


def _learn_to_the_end(tmp_path, partitions) -> tuple[Daemon, MemorySource]:
    """A daemon that read ``partitions`` to their ends, checkpointed and closed; its source."""
    source = MemorySource(partitions)
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    return daemon, source


def test_bad_messages_are_dead_lettered_and_only_valid_ones_learned(tmp_path):
    partitions, x, y, letters = _topic()
    daemon, source = _learn_to_the_end(tmp_path, partitions)
    _assert_same_model(daemon.learner, _reference(x, y))
    assert daemon.loop.samples_seen == len(y)
    assert sorted(_letters(tmp_path)) == sorted(letters) and len(letters) >= 10
    registry_ = daemon.telemetry.registry
    for reason in {r for _, _, r in letters}:
        expected = sum(r == reason for _, _, r in letters)
        assert (
            registry_.get_sample_value("streamcl_invalid_messages_total", {"reason": reason})
            == expected
        )
    assert registry_.get_sample_value("streamcl_samples_total", {"learner": "nmc"}) == len(y)
    assert daemon.positions == {p: len(v) for p, v in partitions.items()}
    assert source.committed == daemon.positions


def test_redelivered_records_are_not_learned_again(tmp_path):
    partitions, x, y, letters = _topic()
    source = MemorySource(partitions)
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    source.positions = {0: 1, 1: 0}  # a client that fetches from old positions after a reconnect
    _drain(daemon, source)
    daemon.close()
    _assert_same_model(daemon.learner, _reference(x, y))
    assert daemon.loop.samples_seen == len(y) and len(_letters(tmp_path)) == len(letters)


def test_a_rebalance_resumes_each_partition_where_learning_stopped(tmp_path):
    partitions, x, y, _ = _topic()
    source = MemorySource(partitions)
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    daemon.connect()
    for _ in range(3):
        daemon.step()
    learned_up_to = dict(daemon.positions)
    source.rebalance()
    _drain(daemon, source)
    daemon.close()
    assert source.assignments == [{}, learned_up_to]
    _assert_same_model(daemon.learner, _reference(x, y))


def test_a_restart_continues_from_the_checkpoint_and_learns_each_message_once(tmp_path):
    partitions, x, y, letters = _topic()
    first_source = MemorySource(partitions)
    first = Daemon(
        _config(tmp_path, checkpoint={"every_samples": 10}), source_factory=first_source.bind
    )
    first.connect()
    for _ in range(4):
        first.step()
    checkpointed = dict(first.checkpointed_positions)
    assert checkpointed and first.positions != checkpointed  # learned beyond the checkpoint
    first.close()  # a crash: no final checkpoint

    source = MemorySource(partitions)
    second = Daemon(_config(tmp_path), source_factory=source.bind)
    assert second.positions == checkpointed
    _drain(second, source)
    second.checkpoint()
    second.close()
    assert source.assignments == [checkpointed]
    _assert_same_model(second.learner, _reference(x, y))
    assert second.loop.samples_seen == len(y)
    assert sorted(_letters(tmp_path)) == sorted(letters)
    meta = CheckpointStore(tmp_path / "ckpt").latest().meta
    assert meta["counters"]["samples"] == len(y)
    assert meta["counters"]["messages"] == sum(len(v) for v in partitions.values())


def _resume_after_resealing(tmp_path, change) -> None:
    """Learn half the topic, reseal the newest checkpoint as ``change(meta, learner)`` leaves
    it (a keyless seal anyone may rewrite), then resume on the whole topic: the daemon must
    pass it over for the one before and learn every message exactly once."""
    partitions, x, y, letters = _topic()
    _learn_to_the_end(tmp_path, {p: r[: len(r) // 2] for p, r in partitions.items()})
    store = CheckpointStore(tmp_path / "ckpt")
    latest = store.latest()
    store.write(*change(latest.meta, latest.learner))
    second, _ = _learn_to_the_end(tmp_path, partitions)
    _assert_same_model(second.learner, _reference(x, y))
    assert sorted(_letters(tmp_path)) == sorted(letters)


def test_a_checkpoint_whose_model_holds_nan_is_passed_over_for_the_one_before(tmp_path):
    """A resealed checkpoint with a NaN in the model was resumed: every batch after it then
    made the state non-finite and was dead-lettered as a learner error."""

    def poison(meta, learner):
        learner.tensors["sums.0"][0, 0] = float("nan")
        return meta, learner

    _resume_after_resealing(tmp_path, poison)


def test_a_checkpoint_with_offsets_no_daemon_writes_is_passed_over(tmp_path):
    """A resealed checkpoint with a negative offset was resumed from that offset."""
    _resume_after_resealing(
        tmp_path, lambda meta, learner: ({**meta, "offsets": {"0": -3, "1": 0}}, learner)
    )


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    partitions, *_ = _topic()
    source = MemorySource(partitions)
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    _drain(daemon, source)
    daemon.checkpoint()
    daemon.close()
    with pytest.raises(CheckpointError, match="learner_config"):
        Daemon(_config(tmp_path, learner={"options": {"normalize": True}}))
    with pytest.raises(CheckpointError, match="topic"):
        Daemon(_config(tmp_path, kafka={"topic": "other"}))


def test_broker_failures_back_off_are_reported_and_lose_nothing(tmp_path):
    partitions, x, y, _ = _topic()
    source = MemorySource(partitions)
    source.failing_polls = 3
    daemon = Daemon(_config(tmp_path), source_factory=source.bind)
    daemon.connect()
    for _ in range(3):
        daemon.step()
    assert daemon.telemetry.registry.get_sample_value("streamcl_broker_up") == 0
    assert daemon.watch.failures == 3 and daemon.loop.samples_seen == 0
    _drain(daemon, source)
    daemon.watch.next_probe = 0
    daemon.step()
    assert daemon.telemetry.registry.get_sample_value("streamcl_broker_up") == 1
    daemon.close()
    _assert_same_model(daemon.learner, _reference(x, y))


def _stopped_when_drained(tmp_path, partitions, prepare=lambda daemon: None) -> Daemon:
    """A daemon run on a thread over ``partitions`` and stopped once it read them all."""
    source = MemorySource(partitions)
    daemon = Daemon(
        _config(
            tmp_path, checkpoint={"every_samples": 10_000}, kafka={"poll_timeout_seconds": 0.01}
        ),
        source_factory=source.bind,
    )
    prepare(daemon)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    while not source.drained():
        runner.join(0.01)
    daemon.stop()
    runner.join(10)
    assert not runner.is_alive() and source.closed
    return daemon


def test_stop_finishes_the_batch_checkpoints_and_returns(tmp_path):
    partitions, x, y, _ = _topic()
    daemon = _stopped_when_drained(tmp_path, partitions)
    assert not daemon.final_checkpoint_failed
    latest = CheckpointStore(tmp_path / "ckpt").latest()
    assert {int(p): o for p, o in latest.meta["offsets"].items()} == daemon.positions
    # what waited for a complete micro-batch is in the checkpoint, to be learned after a restart
    assert latest.meta["loop"]["samples_seen"] + len(daemon.pending) == len(y)
    assert latest.meta["pending"] == daemon.pending.state_dict()
    restored = registry.create("nmc", PROBLEM)
    restored.load_state_dict(latest.learner)
    _assert_same_model(restored, _reference(x, y))


def test_a_stop_whose_last_checkpoint_fails_says_so(tmp_path, monkeypatch):
    """The final checkpoint failed (storage, or the broker during an outage) and the daemon
    still reported a clean stop, exit 0."""

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    partitions, *_ = _topic()
    daemon = _stopped_when_drained(
        tmp_path, partitions, lambda d: monkeypatch.setattr(d.store, "write", full_disk)
    )
    assert daemon.final_checkpoint_failed
    assert CheckpointStore(tmp_path / "ckpt").latest() is None


def test_brokers_unreachable_at_start_are_retried_until_they_answer(tmp_path):
    partitions, x, y, _ = _topic()
    source = MemorySource(partitions)
    attempts = []

    def factory(config, on_assign, on_error):
        attempts.append(1)
        if len(attempts) <= 2:
            raise SourceError("Unable to bootstrap (test)")
        return source.bind(config, on_assign, on_error)

    daemon = Daemon(_config(tmp_path), source_factory=factory)
    for _ in range(2):
        daemon.step()
    assert daemon.source is None and daemon.watch.up is False
    _drain(daemon, source)
    daemon.close()
    assert len(attempts) == 3
    _assert_same_model(daemon.learner, _reference(x, y))


# -- micro-batches by message order, not by polls ---------------------------------------------

ER = {
    "name": "er",
    "options": {"backbone": {"hidden": [8], "out_dim": 4}, "memory": {"capacity": 12}},
}


def _tasks_stream(seed: int = 21) -> tuple[list[bytes], list[Samples]]:
    """One partition of 1- and 3-sample messages over three tasks (changes inside batches)."""
    rng = np.random.default_rng(seed)
    messages, samples = [], []
    for i in range(17):
        n = 3 if i % 3 else 1
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, n)
        task = np.full(n, i // 6)
        messages.append(encode_binary(x, y, task=task))
        samples.append(Decoder(PROBLEM).decode(messages[-1]))
    return messages, samples


def _parameters(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.model.parameters()]


@pytest.mark.parametrize("max_poll_records", [1, 2, 5, 40])
def test_a_gradient_learner_learns_what_a_replay_learns_however_the_polls_fall(
    tmp_path, max_poll_records
):
    """``er``'s model depends on how samples are cut into micro-batches. The daemon carries a
    poll's short last batch to the next poll, so its batches follow the message order alone:
    whatever ``max_poll_records``, it learns exactly the model of one loop over the same
    samples (the replay's cut rule, stream/sources/cuts.py)."""
    messages, samples = _tasks_stream()
    source = MemorySource({0: messages})
    config = _config(tmp_path, learner=ER, kafka={"max_poll_records": max_poll_records})
    daemon = Daemon(config, source_factory=source.bind)
    _drain(daemon, source)
    daemon.close()
    replay = EventLoop(registry.create("er", PROBLEM, ER["options"]), PROBLEM, config.loop)
    for batch in micro_batches(samples, config.loop.batch_size):
        replay.process(batch)
    assert daemon.loop.samples_seen == replay.samples_seen == sum(len(s) for s in samples)
    for mine, theirs in zip(_parameters(daemon.learner), _parameters(replay.learner), strict=True):
        assert torch.equal(mine, theirs)


def _learned_state(learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.state_dict().tensors.items()}


ANALYTIC = [
    {"name": name, "options": {"buffer_size": 32, "solver": solver}}
    for name in ("ds-al", "acil", "aef-ocl")
    for solver in ("auto", "lazy", "woodbury")
]


@pytest.mark.parametrize(
    "learner", [ER, *ANALYTIC], ids=lambda c: f"{c['name']}-{c['options'].get('solver', '')}"
)
def test_a_learner_resumed_from_any_checkpoint_equals_an_uninterrupted_one(tmp_path, learner):
    """Killed (no last checkpoint) after each of several polls, resumed from the checkpoint it
    had, ``er`` ends with the model of a daemon that never stopped: the checkpoint carries the
    samples read but still waiting for their micro-batch. So do the analytic learners, bit for
    bit (their checkpoint carries each ridge head's cached solution, cadence and waiting Gram
    rows; ``ds-al`` learns from its main head's solution, so rounding there would be learned)."""
    if learner is not ER:
        _analytic_resumed_from_any_checkpoint(tmp_path, learner)
        return
    messages, _ = _tasks_stream(seed=22)
    source = MemorySource({0: messages})
    whole = Daemon(_config(tmp_path / "whole", learner=ER), source_factory=source.bind)
    _drain(whole, source)
    whole.close()
    waiting = []
    for killed_after in (2, 5, 9):
        directory = tmp_path / f"killed-{killed_after}"
        resumed, left = _killed_and_resumed(directory, ER, messages, killed_after)
        waiting.append(len(left.meta["pending"]))
        for mine, theirs in zip(
            _parameters(resumed.learner), _parameters(whole.learner), strict=True
        ):
            assert torch.equal(mine, theirs), killed_after
    assert any(waiting)  # some checkpoint held samples waiting for their micro-batch


def _killed_and_resumed(directory, learner, messages, steps):
    """A daemon killed (as by ``kill -9``: no last checkpoint) after ``steps`` polls of
    ``messages``, then one resumed from what it left and run to the end; the resumed daemon,
    and the checkpoint the killed one left."""
    source = MemorySource({0: messages})
    first = Daemon(_config(directory, learner=learner), source_factory=source.bind)
    first.connect()
    for _ in range(steps):
        first.step()
    # its locks (checkpoint.dir, dead-letter file) go with the process
    first.store.unlock()
    first.dead_letters.close()
    left = CheckpointStore(directory / "ckpt").latest()
    source = MemorySource({0: messages})
    resumed = Daemon(_config(directory, learner=learner), source_factory=source.bind)
    _drain(resumed, source)
    resumed.close()
    return resumed, left


def _analytic_resumed_from_any_checkpoint(tmp_path, learner) -> None:
    messages, _ = _tasks_stream(seed=22)
    source = MemorySource({0: messages})
    whole = Daemon(_config(tmp_path / "whole", learner=learner), source_factory=source.bind)
    _drain(whole, source)
    whole.close()
    expected = _learned_state(whole.learner)
    probe = torch.randn(16, *PROBLEM.input_shape, generator=torch.Generator().manual_seed(3))
    scores = whole.learner.predict(probe)
    for killed_after in (1, 3, 6):
        resumed, _ = _killed_and_resumed(
            tmp_path / f"killed-{killed_after}", learner, messages, killed_after
        )
        got = _learned_state(resumed.learner)
        assert got.keys() == expected.keys(), killed_after
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), (killed_after, key)
        assert torch.equal(resumed.learner.predict(probe), scores), killed_after


def test_only_an_empty_poll_at_the_topics_end_learns_a_short_batch_early(tmp_path):
    """An empty poll while the group joins or a fetch is under way is not an idle topic: the
    short batch waits (else a restart would learn it short where an uninterrupted run would
    have completed it); at the end of what the broker has, it is learned."""
    messages, _ = _tasks_stream()
    source = MemorySource({0: messages[:5]})
    daemon = Daemon(_config(tmp_path, learner=ER), source_factory=source.bind)
    daemon.connect()
    while not source.drained():
        daemon.step()
    waiting = len(daemon.pending)
    assert waiting
    source.highwater = lambda partitions: {0: len(messages)}  # more there, not yet fetched
    daemon.step()
    assert len(daemon.pending) == waiting
    source.assigned = False  # a group rebalancing: no partition
    daemon.step()
    assert len(daemon.pending) == waiting
    source.assigned = True
    source.highwater = lambda partitions: {0: 5}
    daemon.step()
    assert len(daemon.pending) == 0
    daemon.close()


def test_a_checkpoint_with_samples_waiting_resumes_under_another_batch_size(tmp_path):
    """loop.batch_size is a setting one may change between runs: the samples a checkpoint
    holds waiting (fewer than the old batch size) are learned under the new one."""
    messages, samples = _tasks_stream()
    source = MemorySource({0: messages[:3]})  # 1 + 3 + 3 samples: one short of a batch of 8
    first = Daemon(_config(tmp_path, loop={"batch_size": 8}), source_factory=source.bind)
    first.connect()
    while not source.drained():
        first.step()
    first.checkpoint(force=True)
    first.close()
    assert len(first.pending) == 7 and first.loop.samples_seen == 0
    source = MemorySource({0: messages})
    resumed = Daemon(_config(tmp_path, loop={"batch_size": 2}), source_factory=source.bind)
    _drain(resumed, source)
    resumed.close()
    assert resumed.loop.samples_seen == sum(len(s) for s in samples)
