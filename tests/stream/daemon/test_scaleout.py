"""Scale-out on the real broker (tansu): ``streamcl serve --workers 3`` over 3 partitions.

- acil: after the whole topic the group's one model equals a single-process run on the same
  samples to 1e-9, also when one rank is killed with ``kill -9`` mid-stream (torchrun restarts
  the group, every rank resumes from the last complete global checkpoint);
- er: synchronous data-parallel steps keep one model on every rank, and its loss goes down;
- nmc with ``[predictions]``: each rank serves its partitions' requests (topic and HTTP) and
  joins their labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.sinks.kafka_sink import open_sink
from stream.sources.serving_wire import encode_labels, encode_requests
from tests.support.scaleout_group import ScaleOutGroup, publish
from tests.support.serve_process import descendants, free_port
from tests.support.topic_reader import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
WORKERS = 3
DIM = 16
CLASSES = 5
PROBLEM = Problem(input_shape=(DIM,), num_classes=(CLASSES,))


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian classes: a loss that can go down."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (CLASSES, DIM))
    y = rng.integers(0, CLASSES, n)
    return (centres[y] + rng.normal(0, 1, (n, DIM))).astype(np.float32), y.astype(np.int64)


def group_config(tmp_path: Path, name: str, bootstrap: str, learner: dict) -> dict:
    return {
        "kafka": {"bootstrap": bootstrap, "topic": name, "group": name, "client": "confluent",
                  "poll_timeout_seconds": 0.2, "max_poll_records": 4},
        "problem": {"input_shape": [DIM], "num_classes": [CLASSES]},
        "learner": {**learner, "threads": 1},
        "checkpoint": {"dir": str(tmp_path / f"{name}-ckpt"), "every_seconds": 0.5, "keep": 2},
        "sync": {"every_samples": 40, "every_seconds": 0.3, "timeout_seconds": 30},
        "dead_letter": {"file": str(tmp_path / f"{name}-dead.jsonl")},
        "metrics": {"port": None},
    }  # fmt: skip


def single_process(name: str, options: dict, x: np.ndarray, y: np.ndarray):
    learner = registry.create(name, PROBLEM, options)
    learner.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    return learner


@pytest.mark.parametrize("kill", [False, True], ids=["clean", "kill-9-one-rank"])
def test_acil_on_three_ranks_equals_one_process_on_all_samples(kafka_broker, tmp_path, kill):
    """With ``kill``: the first half of the topic is learned, but only a part of it is
    checkpointed (a checkpoint only every 240 samples, at most 30 learned per round, no time
    trigger), when rank 1 is killed; the group resumes from that checkpoint and learns the rest
    again, then the second half."""
    name = f"scaleout-acil-{'kill' if kill else 'clean'}"
    options = {"buffer_size": 256, "gamma": 0.1}
    x, y = blobs(600, seed=1)
    half = 300
    config = group_config(
        tmp_path, name, kafka_broker.bootstrap, {"name": "acil", "options": options}
    )
    if kill:
        config["kafka"]["max_poll_records"] = 1
        config["checkpoint"].update(every_samples=240, every_seconds=3600)
    group = ScaleOutGroup(config, tmp_path, name, WORKERS)
    sent = publish(kafka_broker.bootstrap, name, PARTITIONS, x[:half], y[:half], per_message=10)
    group.start()
    try:
        if kill:
            first = group.wait_for_epoch(1, timeout=120)
            assert sum(first["offsets"].values()) < sum(sent.values())
            time.sleep(2)  # the rest of the first half is learned, not checkpointed
            group.reconfigure(checkpoint={"every_samples": 10_000, "every_seconds": 0.5})
            group.kill_rank(1, timeout=10)
            restored = group.wait_for(lambda e: e["event"] == "checkpoint_loaded", timeout=120)
            assert restored["offsets"] == first["offsets"]
        more = publish(
            kafka_broker.bootstrap, name, PARTITIONS, x[half:], y[half:], per_message=10,
            start=half,
        )  # fmt: skip
        ends = {p: sent[p] + more[p] for p in sent}
        manifest = group.wait_for_offsets(ends, timeout=120)
        assert group.terminate(timeout=60) == 0
    finally:
        group.stop()
    learned = group.learner(group.store.latest() or manifest, 0, PROBLEM)
    alone = single_process("acil", options, x, y)
    assert float(learned.heads[0].counts.sum()) == len(y)  # every sample exactly once
    torch.testing.assert_close(learned.heads[0].gram(), alone.heads[0].gram(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(learned.heads[0].Q, alone.heads[0].Q, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(learned.weights(), alone.weights(), rtol=1e-9, atol=1e-9)
    if kill:
        restarts = [e for e in group.events() if e["event"] == "checkpoint_loaded"]
        assert {e["rank"] for e in restarts} == set(range(WORKERS))


def test_er_steps_data_parallel_and_its_loss_goes_down(kafka_broker, tmp_path):
    name = "scaleout-er"
    options = {
        "backbone": {"hidden": [32], "out_dim": 16},
        "lr": 0.01,
        "memory": {"capacity": 40},
        "replay_batch_size": 8,
    }
    x, y = blobs(450, seed=2)
    group = ScaleOutGroup(
        group_config(tmp_path, name, kafka_broker.bootstrap, {"name": "er", "options": options}),
        tmp_path, name, WORKERS,
    )  # fmt: skip
    sent = publish(kafka_broker.bootstrap, name, PARTITIONS, x, y, per_message=10)
    group.start()
    try:
        group.wait_for_offsets(sent, timeout=120)
        # Ctrl-C: the whole process group; torchrun used to get it too and end with a
        # SignalException traceback and exit 1
        assert group.interrupt_group(timeout=60) == 0, group.tail()
        assert "Traceback" not in group.tail(400), group.tail(400)
    finally:
        group.stop()
    manifest = group.store.latest()
    assert manifest is not None
    ranks = [group.learner(manifest, r, PROBLEM) for r in range(WORKERS)]
    for other in ranks[1:]:  # one model: the same parameters on every rank
        for a, b in zip(ranks[0].model.parameters(), other.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sum(r.memory_samples for r in ranks) > 40  # a memory shard per rank
    fresh = registry.create("er", PROBLEM, options)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    level = torch.zeros(len(y), dtype=torch.long)
    for learner in (fresh, ranks[0]):
        learner.seen = [torch.ones(CLASSES, dtype=torch.bool)]
    with torch.no_grad():
        before = fresh._losses(fresh.backbone(inputs), labels, level).mean()
        after = ranks[0]._losses(ranks[0].backbone(inputs), labels, level).mean()
    assert after < 0.5 * before
    # The same directory with another learner: every worker refuses to start. torchrun used to
    # restart them until its restarts ran out and exit 1, which systemd restarts for ever.
    group.reconfigure(learner={"name": "nmc", "options": {}})
    group.start()
    try:
        assert group.process is not None and group.process.wait(120) == 2, group.tail(40)
    finally:
        group.stop()
    last = json.loads(group.tail(1))  # the launcher's own line (serve logs JSON)
    assert last["event"] == "command_failed" and "written for learner='er'" in last["error"]
    # Without --workers the group's directory resumes as a group of one (one daemon refused it,
    # asking for "--workers N ... also with one worker", which did not work either).
    group.reconfigure(learner={"name": "er", "options": options})
    group.workers = 0
    group.start()
    try:
        group.wait_for(lambda e: e["event"] == "serving" and e.get("world_size") == 1, 120)
        assert group.terminate(timeout=60) == 0, group.tail(40)
    finally:
        group.stop()


def started_nmc_pair(
    kafka_broker, tmp_path: Path, name: str, n: int, seed: int
) -> tuple[ScaleOutGroup, dict[int, int]]:
    """``serve --workers 2`` of nmc started on a topic of ``n`` samples; the group and the
    messages sent to each partition."""
    x, y = blobs(n, seed=seed)
    group = ScaleOutGroup(
        group_config(tmp_path, name, kafka_broker.bootstrap, {"name": "nmc"}), tmp_path, name, 2
    )
    sent = publish(kafka_broker.bootstrap, name, PARTITIONS, x, y, per_message=10)
    group.start()
    return group, sent


def test_a_stop_while_torchrun_restarts_the_group_still_stops_it(kafka_broker, tmp_path):
    """SIGTERM to ``serve --workers`` right after a rank died: torchrun was starting new
    workers, which the forwarded signal killed while they imported torch; torchrun took that
    for another failure and restarted them again, and the group kept running."""
    group, sent = started_nmc_pair(kafka_broker, tmp_path, "scaleout-stop-in-restart", 200, 5)
    try:
        group.wait_for_offsets(sent, timeout=120)
        group.kill_rank(1, timeout=10)
        deadline = time.monotonic() + 60
        while "failed (exitcode: -9)" not in group.tail(400):  # torchrun restarts the group
            assert time.monotonic() < deadline, group.tail(40)
            time.sleep(0.05)
        assert group.terminate(timeout=120) == 0, group.tail(60)
    finally:
        group.stop()
    assert group.store.latest() is not None


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_of_the_launcher_stops_its_workers_with_a_last_checkpoint(kafka_broker, tmp_path):
    """``kill -9`` of ``serve --workers`` left torchrun and its workers running, their locks
    held, so the group could not be started again; now torchrun is told when the command dies
    and stops them, and they write a last global checkpoint as on SIGTERM."""
    group, sent = started_nmc_pair(kafka_broker, tmp_path, "scaleout-launcher-killed", 120, 6)
    family: list[int] = []
    try:
        group.wait_for_offsets(sent, timeout=120)
        ranks = group.rank_pids(timeout=10)
        assert group.process is not None
        family += [*descendants(group.process.pid), *ranks.values()]
        group.kill9()
        deadline = time.monotonic() + 90
        while any(_running(pid) for pid in family):
            assert time.monotonic() < deadline, group.tail(40)
            time.sleep(0.1)
        stopped = [e for e in group.events() if e["event"] == "stopped"]
        assert sorted(e["rank"] for e in stopped) == [0, 1], group.tail(40)
        group.start()  # the locks were released: the group starts again
        group.wait_for(lambda e: e["event"] == "serving" and e.get("world_size") == 2, 120)
        assert group.terminate(timeout=120) == 0, group.tail(40)
    finally:
        group.stop()
        for pid in family:  # what the killed command would have left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def free_ports(count: int) -> int:
    """A port ``p`` with ``p .. p + count - 1`` free (rank L serves on metrics.port + L)."""
    for _ in range(50):
        first = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    probe = held.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports")


def post_predict(port: int, x: np.ndarray) -> dict:
    body = json.dumps({"samples": [{"x": row.tolist()} for row in x]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_two_ranks_serve_predictions_on_the_topic_and_over_http(kafka_broker, tmp_path):
    """``[predictions]`` under ``--workers 2``: each rank answers the requests of its partition
    on the predictions topic and ``POST /predict`` on its own port, joins the labels that come
    on the same partition, and the group's one model is the one learner of every sample."""
    name = "scaleout-serving"
    x, y = blobs(96, seed=3)
    config = group_config(tmp_path, name, kafka_broker.bootstrap, {"name": "nmc"})
    config["predictions"] = {"topic": f"{name}-out", "http": True}
    port = free_ports(2)
    config["metrics"] = {"port": port}
    sink = open_sink("confluent", kafka_broker.bootstrap)
    assert sink.ensure_topic(name, 2) == 2
    owned: dict[int, list[int]] = {0: [], 1: []}
    for number, first in enumerate(range(0, len(y), 8)):  # requests keyed to a partition
        ids = np.arange(first, first + 8)
        sink.send(name, encode_requests(x[ids], ids), partition=number % 2)
        owned[number % 2].extend(ids.tolist())
    for partition, ids in owned.items():  # their labels, on the same partitions
        sink.send(name, encode_labels(np.array(ids), y[ids]), partition=partition)
    sink.flush()
    sink.close()
    group = ScaleOutGroup(config, tmp_path, name, 2)
    group.start()
    try:
        manifest = group.wait_for_offsets({0: 7, 1: 7}, timeout=120)
        for rank in (0, 1):
            answer = post_predict(port + rank, x[:3])
            assert len(answer["predictions"]) == 3 and answer["position"] > 0
        assert group.terminate(timeout=60) == 0
    finally:
        group.stop()
    answers = [json.loads(v) for _, v in read_topic(kafka_broker.bootstrap, f"{name}-out")]
    troubles = [e for e in group.events() if e.get("level") in ("warning", "error")]
    answered = sorted(a["id"] for a in answers)
    assert answered == list(range(len(y))), troubles  # each request once
    for a in answers:
        assert a["id"] in owned[a["request"]["partition"]]
    learned = group.learner(group.store.latest() or manifest, 0, PROBLEM)
    alone = single_process("nmc", {}, x, y)
    assert torch.equal(learned.counts[0], alone.counts[0])
    torch.testing.assert_close(learned.sums[0], alone.sums[0], rtol=1e-12, atol=0)
