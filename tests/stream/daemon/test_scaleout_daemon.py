"""The scale-out daemon's rounds, in process: ranks as threads over in-memory partitions.

The exact code of ``stream/daemon/scaleout.py`` runs; only the process group (threads that sum,
tests/support/threaded_ranks.py) and the Kafka client (``PartitionSource``) are stand-ins. The
torchrun and real-broker tests are in tests/stream/daemon/test_scaleout.py.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.daemon.aligned_checkpoint import AlignedCheckpoints
from stream.daemon.checkpoint import CheckpointError
from stream.daemon.config import (
    EvaluationConfig,
    PredictionsConfig,
    ServeConfig,
    ServeConfigError,
)
from stream.daemon.distributed import World
from stream.daemon.scaleout import NonFiniteState, ScaleOutDaemon, rank_file
from stream.daemon.serve import Daemon
from stream.engine.drift_detection import DriftConfig
from stream.engine.guard import non_finite
from stream.sources.kafka_source import KafkaSource, Record
from stream.sources.serving_wire import ServingDecoder, encode_labels, encode_requests
from stream.sources.wire import Decoder, encode_binary
from tests.support.memory_source import MemorySource
from tests.support.threaded_ranks import ThreadedCollectives, ThreadedGroup
from tests.support.topic_reader import read_topic

PROBLEM = Problem(input_shape=(6,), num_classes=(3,))
PER_MESSAGE = 4


class PartitionSource(KafkaSource):
    """A topic held in memory; reads the partitions ``choose`` picks, from where the daemon says."""

    def __init__(self, topic: dict[int, list[bytes]], config, on_assign, on_error, choose) -> None:
        super().__init__(config, on_assign, on_error, choose)
        self.data = topic
        self.mine = choose(sorted(topic))
        resume = on_assign(self.mine)
        self.positions = {p: resume.get(p, 0) for p in self.mine}

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        records = []
        for partition in self.mine:
            values = self.data[partition]
            if self.positions[partition] > len(values):  # the topic was recreated
                if self.on_reset is not None:
                    self.on_reset(partition, self.positions[partition])
                self.positions[partition] = 0  # start_from = earliest
            while self.positions[partition] < len(values) and len(records) < max_records:
                offset = self.positions[partition]
                records.append(Record(partition, offset, values[offset]))
                self.positions[partition] += 1
        return records

    def assignment(self) -> list[int]:
        return list(self.mine)

    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        return {p: len(self.data[p]) for p in partitions}

    def highwater(self, partitions: list[int]) -> dict[int, int]:
        return self.end_offsets(partitions, 0.0)

    def commit(self, offsets: dict[int, int]) -> None:
        """Nothing to tell: there is no group."""

    def close(self) -> None:
        """Nothing to leave."""


def samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def topic_of(x: np.ndarray, y: np.ndarray, partitions: int) -> dict[int, list[bytes]]:
    topic: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for number, start in enumerate(range(0, len(y), PER_MESSAGE)):
        rows = slice(start, start + PER_MESSAGE)
        topic[number % partitions].append(encode_binary(x[rows], y[rows]))
    return topic


def config(tmp_path: Path, learner: dict, every_samples: int = 24) -> ServeConfig:
    return ServeConfig.model_validate(
        {
            "kafka": {
                "bootstrap": "127.0.0.1:9",
                "topic": "t",
                "max_poll_records": 3,
                "poll_timeout_seconds": 0.05,
            },
            "problem": {"input_shape": [6], "num_classes": [3]},
            "learner": learner,
            "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": every_samples},
            "sync": {"every_samples": 10},
            "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
            "metrics": {"port": None},
        }
    )


def rank_daemon(
    cfg: ServeConfig, topic: dict[int, list[bytes]], group: ThreadedGroup, rank: int
) -> ScaleOutDaemon:
    """Rank ``rank`` of ``group``, reading ``topic`` from memory."""
    return ScaleOutDaemon(
        cfg,
        World(rank, group.size),
        lambda *args: PartitionSource(topic, *args),
        ThreadedCollectives(group, rank),
    )


def run_group(
    cfg: ServeConfig, topic: dict[int, list[bytes]], ranks: int, rounds: int, stop: bool = True
) -> list[ScaleOutDaemon]:
    """``rounds`` rounds of ``ranks`` ranks; with ``stop`` rank 0 is then asked to stop (the
    group checkpoints and ends), without it the ranks just vanish (as after ``kill -9``)."""
    group = ThreadedGroup(ranks)

    def work(rank: int) -> ScaleOutDaemon:
        daemon = rank_daemon(cfg, topic, group, rank)
        try:
            for _ in range(rounds):
                daemon.round()
            if stop:
                if rank == 0:
                    daemon.stop()
                while not daemon.round():
                    pass
        finally:  # a failed rank too: its lock goes with it, as with a process
            daemon.close()
        return daemon

    return group.run(work)


def test_ranks_read_disjoint_partitions_and_hold_one_model_equal_to_one_learner(tmp_path):
    x, y = samples(120)
    cfg = config(tmp_path, {"name": "acil", "options": {"buffer_size": 24}})
    daemons = run_group(cfg, topic_of(x, y, 5), ranks=3, rounds=6)
    assert [d.partitions for d in daemons] == [[0, 3], [1, 4], [2]]
    alone = registry.create("acil", PROBLEM, {"buffer_size": 24})
    alone.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    for daemon in daemons:
        torch.testing.assert_close(daemon.learner.weights(), alone.weights(), rtol=1e-9, atol=1e-9)
    assert sum(d.loop.samples_seen for d in daemons) == len(y)
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None and manifest["world_size"] == 3
    assert manifest["offsets"] == {"0": 6, "1": 6, "2": 6, "3": 6, "4": 6}
    assert [s["file"] for s in manifest["shards"]] == [
        "rank-00000.sclckpt", "rank-00001.sclckpt", "rank-00002.sclckpt",
    ]  # fmt: skip


def test_slda_ranks_combine_their_moments_into_one_exact_model(tmp_path):
    x, y = samples(96, seed=5)
    cfg = config(tmp_path, {"name": "slda"})
    daemons = run_group(cfg, topic_of(x, y, 3), ranks=2, rounds=5)
    alone = registry.create("slda", PROBLEM, {})
    alone.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    for daemon in daemons:
        stats = daemon.learner.stats[0]
        assert torch.equal(stats.counts, alone.stats[0].counts)
        torch.testing.assert_close(stats.mean, alone.stats[0].mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(stats.m2, alone.stats[0].m2, rtol=1e-9, atol=1e-9)


def test_a_vanished_group_resumes_from_the_last_global_checkpoint_in_another_world(tmp_path):
    """Three ranks learn part of the topic and vanish; two ranks resume from the last complete
    epoch, partitions move between ranks, and every sample is learned exactly once."""
    x, y = samples(160, seed=1)
    topic = topic_of(x, y, 4)
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=40)
    vanished = run_group(cfg, topic, ranks=3, rounds=3, stop=False)
    store = AlignedCheckpoints(cfg.checkpoint.dir)
    first = store.latest()
    assert first is not None
    learned = sum(o for d in vanished for o in d.positions.values())
    # mid-stream, and messages were learned after the last checkpoint: they are learned again
    assert sum(first["offsets"].values()) < learned < sum(len(v) for v in topic.values())
    daemons = run_group(cfg, topic, ranks=2, rounds=12)
    assert [d.partitions for d in daemons] == [[0, 2], [1, 3]]
    model = daemons[0].learner
    alone = registry.create("nmc", PROBLEM, {})
    alone.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    assert torch.equal(model.counts[0], alone.counts[0])  # each sample once
    torch.testing.assert_close(model.sums[0], alone.sums[0], rtol=1e-9, atol=1e-9)
    final = store.latest()
    assert final is not None and final["world_size"] == 2
    assert final["offsets"] == {str(p): len(v) for p, v in topic.items()}


def test_an_epoch_a_rank_cannot_use_is_passed_over_by_every_rank(tmp_path):
    """A sealed shard whose content no daemon writes (here a NaN in the loop state, which
    used to load and then fail every batch) makes every rank resume from the epoch before,
    as one daemon passes over an unusable checkpoint; every sample is still learned once."""
    x, y = samples(160, seed=1)
    topic = topic_of(x, y, 4)
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=20)
    run_group(cfg, topic, ranks=3, rounds=3, stop=False)
    store = AlignedCheckpoints(cfg.checkpoint.dir)
    newest, before = store.epochs()[:2]
    manifest = store.latest()
    assert manifest is not None and manifest["epoch"] == newest
    shard = store.load_shard(manifest, 1)
    loop = {**shard.meta["loop"], "pending_updates": float("nan")}
    entry = store.write_shard(newest, 1, {**shard.meta, "loop": loop}, shard.learner)
    manifest["shards"][1] = entry
    (store.epoch_dir(newest) / "MANIFEST.json").write_text(json.dumps(manifest))
    daemons = run_group(cfg, topic, ranks=2, rounds=14)
    assert daemons[0].epoch > newest  # resumed from ``before``, then wrote epochs of its own
    # the counters continued from ``before`` alone: rank 0, which could use ``newest``, did
    # not count that epoch's samples first
    exported = [
        sample.value
        for daemon in daemons
        for metric in daemon.telemetry.registry.collect()
        if metric.name == "streamcl_samples"
        for sample in metric.samples
        if sample.name == "streamcl_samples_total"
    ]
    assert sum(exported) == len(y), exported
    model = daemons[0].learner
    alone = registry.create("nmc", PROBLEM, {})
    alone.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    assert torch.equal(model.counts[0], alone.counts[0])  # each sample once
    torch.testing.assert_close(model.sums[0], alone.sums[0], rtol=1e-9, atol=1e-9)
    assert before < newest


def test_er_ranks_step_together_and_shards_carry_their_memory(tmp_path):
    x, y = samples(90, seed=2)
    options = {"backbone": {"hidden": [8], "out_dim": 4}, "memory": {"capacity": 30}}
    cfg = config(tmp_path, {"name": "er", "options": options})
    daemons = run_group(cfg, topic_of(x, y, 2), ranks=3, rounds=8)
    assert daemons[2].partitions == []  # more ranks than partitions: rank 2 steps with zero weight
    first = list(daemons[0].learner.model.parameters())
    for other in daemons[1:]:
        for a, b in zip(first, other.learner.model.parameters(), strict=True):
            assert torch.equal(a, b)
    assert daemons[2].learner.memory_samples == 0
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None
    shards = [AlignedCheckpoints(cfg.checkpoint.dir).load_shard(manifest, r) for r in range(3)]
    assert all(shard.learner is not None for shard in shards)


def test_additive_learners_write_the_model_in_rank_zeros_shard_only(tmp_path):
    x, y = samples(40, seed=3)
    cfg = config(tmp_path, {"name": "nmc"})
    run_group(cfg, topic_of(x, y, 2), ranks=2, rounds=3)
    store = AlignedCheckpoints(cfg.checkpoint.dir)
    manifest = store.latest()
    assert manifest is not None
    assert store.load_shard(manifest, 0).learner is not None
    assert store.load_shard(manifest, 1).learner is None


def test_each_rank_writes_its_own_dead_letters(tmp_path):
    x, y = samples(16, seed=4)
    topic = topic_of(x, y, 2)
    topic[1].append(b"not a message")
    cfg = config(tmp_path, {"name": "nmc"})
    run_group(cfg, topic, ranks=2, rounds=2)
    first, second = (rank_file(tmp_path / "dead.jsonl", rank) for rank in (0, 1))
    assert not first.exists() or first.read_text() == ""
    [letter] = [json.loads(line) for line in second.read_text().splitlines()]
    assert (letter["partition"], letter["offset"]) == (1, len(topic[1]) - 1)


def test_a_learner_that_cannot_be_scaled_out_is_refused(tmp_path):
    cfg = config(tmp_path, {"name": "river:naive_bayes.GaussianNB"})
    with pytest.raises(ServeConfigError, match="cannot be scaled out"):
        ScaleOutDaemon(
            cfg,
            World(0, 1),
            lambda *args: PartitionSource({0: []}, *args),
            ThreadedCollectives(ThreadedGroup(1), 0),
            checkpoint_key=b"a checkpoint key: river state is pickled",
        )


def test_a_drift_action_is_refused_since_one_rank_cannot_change_the_one_model(tmp_path):
    cfg = config(tmp_path, {"name": "nmc"})
    cfg.loop.drift = DriftConfig(action="reset")
    with pytest.raises(ServeConfigError, match="only 'none'"):
        ScaleOutDaemon(
            cfg,
            World(0, 1),
            lambda *args: PartitionSource({0: []}, *args),
            ThreadedCollectives(ThreadedGroup(1), 0),
        )


def test_only_rank_zero_evaluates_and_every_series_carries_its_rank(tmp_path):
    cfg = config(tmp_path, {"name": "nmc"})
    cfg.problem = None
    cfg.evaluation = EvaluationConfig(dataset="digits")
    x, y = np.zeros((4, 64), np.float32), np.arange(4)
    topic = {0: [], 1: [encode_binary(x, y)]}
    group = ThreadedGroup(2)

    def work(rank: int) -> ScaleOutDaemon:
        daemon = rank_daemon(cfg, topic, group, rank)
        daemon.round()
        daemon.close()
        return daemon

    first, second = group.run(work)
    assert first.loop.evaluator is not None and second.loop.evaluator is None
    registry = second.telemetry.registry
    assert registry.get_sample_value("streamcl_samples_total", {"learner": "nmc", "rank": "1"}) == 4
    lag = {"topic": "t", "partition": "1", "rank": "1"}
    assert registry.get_sample_value("streamcl_consumer_lag", lag) == 0


def test_a_rank_reports_an_offset_reset_and_learns_the_recreated_partition(tmp_path):
    """A partition recreated with fewer records behind a rank's position: the rank logs and
    counts the reset (as one daemon does, docs/daemon.md) and learns the new records."""
    x, y = samples(32, seed=6)
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"})
    group = ThreadedGroup(2)
    x_new, y_new = samples(8, seed=7)

    def work(rank: int) -> ScaleOutDaemon:
        daemon = rank_daemon(cfg, topic, group, rank)
        for _ in range(4):
            daemon.round()
        if rank == 1:
            topic[0] = topic_of(x_new, y_new, 1)[0]  # 2 messages where 4 were
        group.barrier.wait()
        for _ in range(3):
            daemon.round()
        daemon.close()
        return daemon

    first, second = group.run(work)
    counted = first.telemetry.registry.get_sample_value
    assert (
        counted("streamcl_offset_resets_total", {"topic": "t", "partition": "0", "rank": "0"}) == 1
    )
    assert (
        second.telemetry.registry.get_sample_value(
            "streamcl_offset_resets_total", {"topic": "t", "partition": "1", "rank": "1"}
        )
        == 0
    )
    assert first.positions == {0: 2} and first.loop.samples_seen == 16 + 8


# -- serving predictions ------------------------------------------------------------------------


def serving_config(tmp_path: Path, bootstrap: str, name: str) -> ServeConfig:
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=10**6)
    cfg.kafka.bootstrap = bootstrap
    cfg.predictions = PredictionsConfig(topic=f"{name}-predictions")
    return cfg


def requests_of(x: np.ndarray, partitions: int, first_id: int = 0) -> dict[int, list[bytes]]:
    """Requests for the rows of ``x`` (id = first_id + row), four a message, partition by id:
    a producer keys a request and its label by the id, so both go to one partition."""
    topic: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for start in range(0, len(x), PER_MESSAGE):
        ids = np.arange(start, min(start + PER_MESSAGE, len(x))) + first_id
        topic[(start // PER_MESSAGE) % partitions].append(encode_requests(x[ids - first_id], ids))
    return topic


def labels_for(topic: dict[int, list[bytes]], y: np.ndarray, decoder: ServingDecoder) -> None:
    """Append to each partition one binary label batch for the requests it holds."""
    for values in topic.values():
        ids = np.concatenate([decoder.decode(v).ids for v in values if v[:4] == b"SCLB"])
        values.append(encode_labels(ids, y[ids]))


def served(bootstrap: str, name: str) -> list[dict]:
    return [json.loads(value) for _, value in read_topic(bootstrap, f"{name}-predictions")]


def nmc_of(x: np.ndarray, y: np.ndarray):
    alone = registry.create("nmc", PROBLEM, {})
    alone.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    return alone


def assert_same_nmc(learner, reference) -> None:
    """Every sample counted once, the class sums equal to rounding."""
    assert torch.equal(learner.counts[0], reference.counts[0])
    torch.testing.assert_close(learner.sums[0], reference.sums[0], rtol=1e-12, atol=0)


@pytest.mark.kafka
def test_ranks_serve_the_requests_of_their_partitions_and_learn_their_labels(
    tmp_path, kafka_broker
):
    """Each rank predicts the requests of its own partitions and publishes one prediction per
    request; their labels (on the same partitions) join on that rank, and the one model is the
    one learner of every joined and labelled sample."""
    x, y = samples(40, seed=11)
    topic = requests_of(x[:32], 2)
    labels_for(topic, y, ServingDecoder(Decoder(PROBLEM)))
    for p, values in topic_of(x[32:], y[32:], 2).items():
        topic[p].extend(values)
    cfg = serving_config(tmp_path, kafka_broker.bootstrap, "ranks")
    daemons = run_group(cfg, topic, ranks=2, rounds=8)
    answers = served(kafka_broker.bootstrap, "ranks")
    assert sorted(a["id"] for a in answers) == list(range(32))  # each request once
    assert {a["request"]["partition"] for a in answers if a["id"] % 8 < 4} == {0}
    assert [d.predictions.serving.predictions for d in daemons] == [16, 16]
    assert [d.predictions.serving.unmatched for d in daemons] == [0, 0]
    alone = nmc_of(x, y)
    for daemon in daemons:
        assert_same_nmc(daemon.learner, alone)


@pytest.mark.kafka
def test_er_ranks_serving_requests_step_together_on_their_joined_labels(tmp_path, kafka_broker):
    """A gradient learner serving: the joined labels' steps meet the other rank's, as labelled
    batches' do, and both ranks end with one model (every request answered once)."""
    x, y = samples(48, seed=18)
    topic = requests_of(x, 2)
    labels_for(topic, y, ServingDecoder(Decoder(PROBLEM)))
    cfg = serving_config(tmp_path, kafka_broker.bootstrap, "er-serving")
    options = {"backbone": {"hidden": [8], "out_dim": 4}, "memory": {"capacity": 30}}
    cfg.learner = cfg.learner.model_copy(update={"name": "er", "options": options})
    daemons = run_group(cfg, topic, ranks=2, rounds=8)
    assert [d.loop.samples_seen for d in daemons] == [24, 24]
    for a, b in zip(
        daemons[0].learner.model.parameters(), daemons[1].learner.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    fresh = registry.create("er", PROBLEM, options)
    assert any(  # steps were taken
        not torch.equal(a, b)
        for a, b in zip(
            daemons[0].learner.model.parameters(), fresh.model.parameters(), strict=True
        )
    )
    assert sorted(a["id"] for a in served(kafka_broker.bootstrap, "er-serving")) == list(range(48))


@pytest.mark.kafka
def test_pending_requests_move_with_their_partitions_to_a_group_of_another_size(
    tmp_path, kafka_broker
):
    """Two ranks answer requests and checkpoint with them pending; they answer more and vanish
    (nothing checkpointed). One rank resumes: it holds both windows, takes the predictions
    published since the checkpoint as served (none is published twice), and every label joins."""
    x, y = samples(48, seed=12)
    topic = requests_of(x[:32], 2)
    cfg = serving_config(tmp_path, kafka_broker.bootstrap, "moved")
    run_group(cfg, topic, ranks=2, rounds=6)  # stops with a checkpoint: 32 pending
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None and manifest["offsets"] == {"0": 4, "1": 4}
    for p, values in requests_of(x[32:], 2, first_id=32).items():
        topic[p].extend(values)
    run_group(cfg, topic, ranks=2, rounds=6, stop=False)  # answers 16 more, then vanishes
    assert len(served(kafka_broker.bootstrap, "moved")) == 48
    labels_for(topic, y, ServingDecoder(Decoder(PROBLEM)))
    [alone] = run_group(cfg, topic, ranks=1, rounds=8)
    answers = served(kafka_broker.bootstrap, "moved")
    assert sorted(a["id"] for a in answers) == list(range(48))  # still once each
    serving = alone.predictions.serving
    assert serving.unmatched == 0 and len(serving.join) == 0 and serving.expired == 0
    assert alone.loop.samples_seen == 48
    assert_same_nmc(alone.learner, nmc_of(x, y))


@pytest.mark.kafka
def test_a_window_split_over_more_ranks_keeps_each_request_where_its_label_comes(
    tmp_path, kafka_broker
):
    """One rank checkpoints 32 pending requests from two partitions; two ranks resume and each
    keeps only its partition's, so every label joins and none is counted expired."""
    x, y = samples(32, seed=13)
    topic = requests_of(x, 2)
    cfg = serving_config(tmp_path, kafka_broker.bootstrap, "split")
    [one] = run_group(cfg, topic, ranks=1, rounds=6)
    assert len(one.predictions.serving.join) == 32
    labels_for(topic, y, ServingDecoder(Decoder(PROBLEM)))
    daemons = run_group(cfg, topic, ranks=2, rounds=6)
    for daemon in daemons:
        serving = daemon.predictions.serving
        assert (serving.unmatched, serving.expired, len(serving.join)) == (0, 0, 0)
    assert [d.loop.samples_seen for d in daemons] == [16, 16]
    assert len(served(kafka_broker.bootstrap, "split")) == 32
    reference = nmc_of(x, y)
    torch.testing.assert_close(daemons[1].learner.sums[0], reference.sums[0], rtol=1e-12, atol=0)


# -- a learner error ------------------------------------------------------------------------------

POISON = 999.0


def run_poisoned_group(cfg: ServeConfig, topic: dict[int, list[bytes]], mode: str) -> None:
    """Two ranks for 12 rounds whose learners, on a batch holding a POISON feature, raise
    (``mode`` "raise") or leave NaN in their class sums ("nan")."""
    group = ThreadedGroup(2)

    def work(rank: int) -> ScaleOutDaemon:
        daemon = rank_daemon(cfg, topic, group, rank)
        learner = daemon.learner
        fused = learner.predict_then_learn

        def poisoned(inputs, labels, level=None, iterations=1):
            hit = bool((inputs[:, 1] == POISON).any())
            if hit and mode == "raise":
                raise RuntimeError("Matrix is not positive definite")
            if hit and mode == "peer":  # what gloo raises in the all-reduce when a peer dies
                raise RuntimeError(
                    "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"
                )
            scores = fused(inputs, labels, level, iterations)
            if hit:
                learner.sums[0][0, 0] = float("nan")
            return scores

        learner.predict_then_learn = poisoned
        try:
            for _ in range(12):
                daemon.round()
        finally:
            daemon.close()
        return daemon

    group.run(work)


def test_a_batch_the_learner_fails_on_costs_one_restart_and_is_then_dead_lettered(tmp_path):
    """A rank whose learner raises records the batch's messages in checkpoint.dir and fails
    (the group restarts); the restarted group, in another world here, dead-letters them as
    learner_error and learns everything else: the model equals one that never saw them."""
    x, y = samples(64, seed=14)
    x[21, 1] = POISON  # message 5 (samples 20..23): partition 1's third message
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=16)
    cfg.loop.batch_size = PER_MESSAGE  # a batch is a message
    with pytest.raises(RuntimeError, match="not positive definite"):
        run_poisoned_group(cfg, topic, "raise")
    [entry] = [
        json.loads(line)
        for line in (tmp_path / "ckpt" / "poison.rank-1.jsonl").read_text().splitlines()
    ]
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("t", 1, 2)
    [alone] = run_group(cfg, topic, ranks=1, rounds=12)
    letters = [
        json.loads(line) for line in rank_file(tmp_path / "dead.jsonl", 0).read_text().splitlines()
    ]
    assert [(d["partition"], d["offset"], d["reason"]) for d in letters] == [
        (1, 2, "learner_error")
    ]
    assert "not positive definite" in letters[0]["detail"]
    kept = np.ones(len(y), dtype=bool)
    kept[20:24] = False
    assert_same_nmc(alone.learner, nmc_of(x[kept], y[kept]))
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None and manifest["offsets"] == {"0": 8, "1": 8}


def test_a_peer_that_dies_inside_a_step_marks_no_batch_as_poison(tmp_path):
    """A rank killed during er's all-reduce made its peer's gloo error count as a learner
    error: the innocent batch was recorded and dead-lettered after the restart (16 samples of
    8652 lost in a kill -9 test)."""
    x, y = samples(64, seed=14)
    x[21, 1] = POISON
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=16)
    cfg.loop.batch_size = PER_MESSAGE
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        run_poisoned_group(cfg, topic, "peer")
    assert not (tmp_path / "ckpt" / "poison.rank-1.jsonl").exists()


# -- from one daemon to a group and back --------------------------------------------------------


def test_a_group_scales_out_a_single_daemon_from_its_checkpoint(tmp_path):
    """A single daemon learned the first half of the topic and checkpointed; retention then
    removed that half from the topic. Two ranks started on its checkpoint.dir take its model
    and offsets and learn the rest, so every sample counts once (before, they started from
    scratch: the first half was lost)."""
    x, y = samples(96, seed=15)
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"})
    half = {p: values[: len(values) // 2] for p, values in topic.items()}
    single = Daemon(cfg, source_factory=MemorySource(half).bind)
    single.connect()
    for _ in range(20):
        single.step()
    single.checkpoint(force=True)
    single.close()
    assert single.loop.samples_seen == 48
    retained = {p: [b""] * len(half[p]) + values[len(half[p]) :] for p, values in topic.items()}
    daemons = run_group(cfg, retained, ranks=2, rounds=10)
    alone = nmc_of(x, y)
    for daemon in daemons:
        assert_same_nmc(daemon.learner, alone)
    assert daemons[0].loop.samples_seen == 48 + 24  # the single daemon's count goes on at rank 0
    assert daemons[1].loop.samples_seen == 24
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None and manifest["offsets"] == {"0": 12, "1": 12}


def test_one_daemon_refuses_a_groups_checkpoints_rather_than_start_afresh(tmp_path):
    x, y = samples(16, seed=16)
    cfg = config(tmp_path, {"name": "nmc"})
    run_group(cfg, topic_of(x, y, 2), ranks=2, rounds=3)
    with pytest.raises(CheckpointError, match="scaled-out group's global checkpoints"):
        Daemon(cfg, source_factory=MemorySource({0: []}).bind)


def test_a_completed_round_returns_on_every_rank_though_one_aborts_right_after():
    """The threaded stand-in for an all-reduce: the rank that arrived last and failed at once
    broke the round its peer had already completed (threading.Barrier), so the rank whose
    statistics were NaN never recorded its poison (a CI run failed so, 1 in ~10)."""
    for _ in range(20):
        group = ThreadedGroup(2)
        outcome: list[str] = []

        def first(group: ThreadedGroup, outcome: list[str]) -> None:
            try:
                group.barrier.wait()
                outcome.append("returned")
            except threading.BrokenBarrierError:
                outcome.append("broken")

        thread = threading.Thread(target=first, args=(group, outcome))
        thread.start()
        while group.barrier.n_waiting == 0:  # the peer waits inside the round
            threading.Event().wait(0.001)
        group.barrier.wait()
        group.barrier.abort()
        thread.join()
        assert outcome == ["returned"]
    with pytest.raises(threading.BrokenBarrierError):  # a round not completed stays broken
        group.barrier.wait()


def test_statistics_turned_nan_never_reach_the_other_ranks_or_a_checkpoint(tmp_path):
    """A rank whose learner leaves NaN in its statistics is caught before the sync point: the
    group fails with no epoch written since; the restarted group dead-letters the messages that
    rank learned since the last sync (the culprit among them) and learns the rest exactly."""
    x, y = samples(64, seed=17)
    x[21, 1] = POISON  # message 5: partition 1's third message
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=16)
    cfg.loop.batch_size = PER_MESSAGE
    with pytest.raises(NonFiniteState, match="NaN or inf"):  # whichever rank failed first
        run_poisoned_group(cfg, topic, "nan")
    store = AlignedCheckpoints(cfg.checkpoint.dir)
    for epoch in store.epochs():
        manifest = store._manifest(epoch)
        if manifest is not None:
            assert non_finite(store.load_shard(manifest, 0).learner) is None
    quarantined = {
        (e["partition"], e["offset"])
        for e in map(
            json.loads, (tmp_path / "ckpt" / "poison.rank-1.jsonl").read_text().splitlines()
        )
    }
    assert (1, 2) in quarantined and all(p == 1 for p, _ in quarantined)
    [alone] = run_group(cfg, topic, ranks=1, rounds=12)
    kept = np.ones(len(y), dtype=bool)
    for _, offset in quarantined:  # partition 1's message k holds samples of message 2k + 1
        kept[(2 * offset + 1) * PER_MESSAGE : (2 * offset + 2) * PER_MESSAGE] = False
    assert_same_nmc(alone.learner, nmc_of(x[kept], y[kept]))
    letters = [
        json.loads(line) for line in rank_file(tmp_path / "dead.jsonl", 0).read_text().splitlines()
    ]
    assert {(d["partition"], d["offset"]) for d in letters} == quarantined


def test_every_rank_predicts_among_the_classes_any_rank_has_shown(tmp_path):
    """Each rank's partitions show only some classes; the synced model has learned them all,
    and every rank used to mask out the classes only the other ranks had shown."""
    rng = np.random.default_rng(2)
    centres = np.eye(3, 6, dtype=np.float32) * 8
    topic: dict[int, list[bytes]] = {0: [], 1: []}
    for number in range(20):
        label = number % 2 if number % 4 < 2 else 2  # partition 0: classes 0, 1; 1: class 2
        y = np.full(PER_MESSAGE, label)
        x = centres[y] + rng.normal(size=(PER_MESSAGE, 6)).astype(np.float32)
        topic[0 if label < 2 else 1].append(encode_binary(x, y))
    daemons = run_group(config(tmp_path, {"name": "nmc"}), topic, ranks=2, rounds=6)
    probe = torch.from_numpy(centres)
    for daemon in daemons:
        assert daemon.loop.seen[0].all(), daemon.world.rank
        assert daemon.loop.masked_scores(probe, 0).argmax(axis=1).tolist() == [0, 1, 2]


def test_a_smaller_group_carries_on_the_counts_of_the_ranks_it_no_longer_has(tmp_path):
    """Scaled in from three ranks to one, the group's samples, messages and prequential counts
    used to fall by what ranks 1 and 2 had counted; the model itself was whole."""
    x, y = samples(144, seed=3)
    topic = topic_of(x, y, 3)
    topic[2].append(b"not a message")
    cfg = config(tmp_path, {"name": "nmc"})
    three = run_group(cfg, topic, ranks=3, rounds=6)
    assert all(d.loop.samples_seen for d in three) and three[2].invalid
    (one,) = run_group(cfg, topic, ranks=1, rounds=1)
    assert one.loop.samples_seen == sum(d.loop.samples_seen for d in three) == len(y)
    assert one.messages == sum(d.messages for d in three)
    assert one.invalid == sum((d.invalid for d in three), Counter())
    assert one.loop.prequential.total == sum(d.loop.prequential.total for d in three)
    assert one.loop.prequential.correct == sum(d.loop.prequential.correct for d in three)


def test_a_finite_extreme_sample_is_found_at_the_sync_point_not_blamed_on_the_next_batch(tmp_path):
    """acil with ``messages.max_abs`` raised: a sample of 1e12 passes every check, and once
    synced the model can solve nothing, on every rank. The next batch of whichever rank used to
    be recorded as the poison (the innocent one), and the group restarted once per batch after
    it. Now the sync point checks that the synced model still predicts: the messages learned
    since the last one (the culprit among them) are quarantined and the rest learned exactly."""
    x, y = samples(64, seed=18)
    x[21, 1:] = 1e12  # message 5: partition 1's third message
    topic = topic_of(x, y, 2)
    options = {"buffer_size": 24}
    cfg = config(tmp_path, {"name": "acil", "options": options}, every_samples=16)
    cfg.loop.batch_size = PER_MESSAGE
    cfg.messages.max_abs = 1e13
    with pytest.raises(NonFiniteState, match="cannot predict"):
        run_group(cfg, topic, ranks=2, rounds=12)
    quarantined = {
        (e["partition"], e["offset"])
        for rank in (0, 1)
        for e in map(
            json.loads,
            (tmp_path / "ckpt" / f"poison.rank-{rank}.jsonl").read_text().splitlines(),
        )
    }
    assert (1, 2) in quarantined and len(quarantined) <= 6, quarantined
    [alone] = run_group(cfg, topic, ranks=1, rounds=12)
    kept = np.ones(len(y), dtype=bool)
    for partition, offset in quarantined:  # partition p's message k is message 2k + p
        first = (2 * offset + partition) * PER_MESSAGE
        kept[first : first + PER_MESSAGE] = False
    reference = registry.create("acil", PROBLEM, options)
    reference.learn(
        torch.from_numpy(x[kept]),
        torch.from_numpy(y[kept]),
        torch.zeros(int(kept.sum()), dtype=torch.long),
    )
    torch.testing.assert_close(alone.learner.weights(), reference.weights(), rtol=1e-9, atol=1e-9)
    letters = [
        json.loads(line) for line in rank_file(tmp_path / "dead.jsonl", 0).read_text().splitlines()
    ]
    assert {(d["partition"], d["offset"]) for d in letters} == quarantined


def test_a_batch_failing_on_what_its_rank_learned_before_quarantines_since_the_sync_point(
    tmp_path,
):
    """The culprit's own rank learns another batch before the sync point: that batch's solve
    fails. It used to be recorded alone, so each restart learned the culprit again and failed
    on the next batch. When the model cannot predict the failing batch from the state before
    it, the rank records everything it learned since the last sync point instead."""
    x, y = samples(48, seed=19)
    x[5, 1:] = 1e12  # message 1 of the one partition; a round reads messages 0, 1 and 2
    topic = topic_of(x, y, 1)
    options = {"buffer_size": 24}
    cfg = config(tmp_path, {"name": "acil", "options": options})
    cfg.loop.batch_size = PER_MESSAGE
    cfg.messages.max_abs = 1e13
    with pytest.raises(ValueError, match="not positive definite"):
        run_group(cfg, topic, ranks=1, rounds=4)
    entries = (tmp_path / "ckpt" / "poison.rank-0.jsonl").read_text().splitlines()
    assert sorted(json.loads(e)["offset"] for e in entries) == [0, 1, 2]
    [alone] = run_group(cfg, topic, ranks=1, rounds=6)
    reference = registry.create("acil", PROBLEM, options)
    rest = slice(3 * PER_MESSAGE, None)
    reference.learn(
        torch.from_numpy(x[rest]), torch.from_numpy(y[rest]), torch.zeros(36, dtype=torch.long)
    )
    torch.testing.assert_close(alone.learner.weights(), reference.weights(), rtol=1e-9, atol=1e-9)


def _letters(tmp_path: Path) -> Counter:
    """(partition, offset) of every dead letter in every dead-letter file of ``tmp_path``."""
    found: Counter = Counter()
    for path in tmp_path.glob("dead*.jsonl"):
        for line in path.read_text().splitlines():
            letter = json.loads(line)
            found[(letter["partition"], letter["offset"])] += 1
    return found


def _with_bad_messages(topic: dict[int, list[bytes]], at: list[int]) -> dict[int, list[bytes]]:
    """``topic`` with a message no decoder takes put into partition 1 before each of ``at``."""
    bad = dict(topic)
    for index in sorted(at, reverse=True):
        bad[1] = [*bad[1][:index], b"not a message", *bad[1][index:]]
    return bad


def test_a_smaller_group_cuts_back_the_dead_letters_of_the_ranks_it_no_longer_has(tmp_path):
    """Two ranks vanish (kill -9) after dead-lettering messages past their last epoch; one rank
    resumes and judges those messages again. Rank 1's file kept its letters after the epoch, so
    each was stored twice; it is now cut back to the epoch, as a rank's own file is."""
    x, y = samples(160, seed=21)
    topic = _with_bad_messages(topic_of(x, y, 2), [2, 12, 14])
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=40)
    run_group(cfg, topic, ranks=2, rounds=5, stop=False)
    manifest = AlignedCheckpoints(cfg.checkpoint.dir).latest()
    assert manifest is not None
    bad = {(1, o) for o, m in enumerate(topic[1]) if m == b"not a message"}
    after = {(p, o) for p, o in _letters(tmp_path) if o >= manifest["offsets"]["1"]}
    assert after  # the precondition: letters past the epoch in rank 1's file
    run_group(cfg, topic, ranks=1, rounds=40)
    assert _letters(tmp_path) == Counter(dict.fromkeys(bad, 1))


def test_a_group_cuts_back_the_dead_letters_of_the_single_daemon_it_scales_out(tmp_path):
    """A single daemon dead-letters messages past its last checkpoint and is killed; a group
    of two resumes from that checkpoint and judges them again into its rank files. The single
    daemon's file kept them too."""
    x, y = samples(96, seed=22)
    topic = _with_bad_messages(topic_of(x, y, 2), [1, 8])
    cfg = config(tmp_path, {"name": "nmc"}, every_samples=1000)
    single = Daemon(cfg, source_factory=MemorySource(topic).bind)
    single.connect()
    for _ in range(2):
        single.step()
    single.checkpoint(force=True)
    for _ in range(20):
        single.step()
    single.close()  # killed: no last checkpoint
    assert sum(_letters(tmp_path).values()) == 2  # both judged, one past the checkpoint
    run_group(cfg, topic, ranks=2, rounds=20)
    bad = {(1, o) for o, m in enumerate(topic[1]) if m == b"not a message"}
    assert _letters(tmp_path) == Counter(dict.fromkeys(bad, 1))


def test_predict_and_export_serve_a_scaled_out_groups_newest_epoch(tmp_path):
    """They read a single daemon's checkpoints only: on a group's directory "no checkpoint",
    and on one scaled out from a single daemon that daemon's older model, without a word."""
    from stream.runs.served_model import export, from_checkpoint, from_file

    x, y = samples(96, seed=23)
    topic = topic_of(x, y, 2)
    cfg = config(tmp_path, {"name": "nmc"})
    single = Daemon(cfg, source_factory=MemorySource({0: topic[0][:4]}).bind)
    single.connect()
    for _ in range(3):
        single.step()
    single.checkpoint(force=True)
    single.close()
    daemons = run_group(cfg, topic, ranks=2, rounds=10)
    model = from_checkpoint(cfg.checkpoint.dir)
    assert model.samples == sum(d.loop.samples_seen for d in daemons) > single.loop.samples_seen
    probe = torch.from_numpy(x[:8])
    expected = daemons[0].learner.predict(probe)
    assert torch.equal(model.serving().loop.learner.predict(probe), expected)
    exported = export(model, tmp_path / "model.safetensors")[0]
    assert torch.equal(from_file(exported).serving().loop.learner.predict(probe), expected)
