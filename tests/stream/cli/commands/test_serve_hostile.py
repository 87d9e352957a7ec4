"""``streamcl serve`` as a process against hostile input and faults, on a real broker (tansu).

- the poison trio (a 3e38 input, task 2^31-1, a 900 KB level string) mixed into a valid topic:
  the daemon never restarts, learns every valid sample once, dead-letters exactly the three
  (to a file, and to a topic), and its model equals one learned from the valid samples alone;
- options the Kafka client refuses: exit 2 with one line, before serving;
- a learner slower than ``max_poll_interval_ms``: the consumer keeps its group membership;
- a full filesystem (a small tmpfs) under the dead letters and checkpoints: the daemon goes on
  learning, ``/healthz`` says ``failing``, and once space is back nothing is lost.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.sources.wire import encode_json
from tests.support.cli_runner import streamcl
from tests.support.serve_process import ServeProcess, Topic, scrape, serve_config

pytestmark = pytest.mark.kafka

PROBLEM = Problem(input_shape=(8,), num_classes=(3,))
MIB = 1 << 20
SMALL = {"input_shape": [8], "num_classes": [3]}


def poison_trio() -> list[tuple[str, bytes]]:
    d = PROBLEM.input_dim
    return [
        ("out_of_range", json.dumps({"x": [3e38] * d, "y": 0}).encode()),
        ("out_of_range", json.dumps({"x": [0.5] * d, "y": 1, "task": 2**31 - 1}).encode()),
        ("unknown_level", json.dumps({"x": [0.5] * d, "y": 2, "level": "A" * 900_000}).encode()),
    ]


def valid_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, PROBLEM.input_dim)).astype(np.float32), rng.integers(0, 3, count)


def reference_state(x: np.ndarray, y: np.ndarray, name: str = "nmc", options=None):
    learner = registry.create(name, PROBLEM, options)
    learner.learn(torch.from_numpy(x), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.long))
    return learner.state_dict()


def read_topic(bootstrap: str, topic: str, count: int) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages: list = []
    deadline = time.monotonic() + 30
    while len(messages) < count and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(10, 0.2) if m.error() is None]
    time.sleep(0.5)  # and nothing more arrives
    messages += [m for m in consumer.consume(10, 0.2) if m.error() is None]
    consumer.close()
    return messages


@pytest.mark.parametrize(("client", "sink"), [("kafka-python", "file"), ("confluent", "topic")])
def test_the_poison_trio_is_dead_lettered_and_the_model_equals_the_valid_samples_alone(
    kafka_broker, tmp_path, client, sink
):
    topic = Topic(kafka_broker.bootstrap, f"poison-{client}", partitions=1)
    x, y = valid_samples(120, seed=1)
    trio = dict(zip((17, 60, 101), poison_trio(), strict=True))
    for i in range(len(y)):
        if i in trio:
            reason, message = trio[i]
            topic.send(message, 0, reason)
        topic.send(encode_json(x[i], int(y[i])), 0)
    topic.flush()
    if sink == "file":
        dead = {"file": str(tmp_path / "dead.jsonl")}
    else:
        dead = {"file": None, "topic": f"poison-dead-{client}"}
        Topic(kafka_broker.bootstrap, dead["topic"], partitions=1)  # created as a user would
    config = serve_config(
        tmp_path, "poison", kafka_broker.bootstrap, topic.name, client, max_bytes=MIB,
        learner={"name": "nmc"}, dead_letter=dead, problem=SMALL,
    )  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "poison")
    daemon.start()
    try:
        final = daemon.wait_until_learned(topic.ends, timeout=120)
        metrics = scrape(daemon)
        pid = daemon.process.pid
        assert daemon.process.poll() is None  # never restarted: the one process is alive
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    assert [e["event"] for e in daemon.events()].count("serving") == 1 and pid
    final = daemon.latest_checkpoint()
    assert final.meta["counters"]["samples"] == len(y)
    assert metrics['streamcl_samples_total{learner="nmc"}'] == len(y)
    assert metrics['streamcl_invalid_messages_total{reason="out_of_range"}'] == 2
    assert metrics['streamcl_invalid_messages_total{reason="unknown_level"}'] == 1
    expected = sorted(topic.invalid)
    if sink == "file":
        letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert sorted((d["partition"], d["offset"], d["reason"]) for d in letters) == expected
        details = [d["detail"] for d in letters]
        cut = [len(base64.b64decode(d["value_base64"])) for d in letters]
    else:
        messages = read_topic(kafka_broker.bootstrap, dead["topic"], 3)
        headers = [{k: v.decode() for k, v in m.headers()} for m in messages]
        assert (
            sorted(
                (int(h["streamcl-partition"]), int(h["streamcl-offset"]), h["streamcl-reason"])
                for h in headers
            )
            == expected
        )  # exactly the three, each once
        details = [h["streamcl-detail"] for h in headers]
        cut = [len(m.value()) for m in messages]
    assert all(len(detail) <= 200 for detail in details)
    assert max(cut) == 256 * 1024  # the 900 KB message, cut under the broker's limit
    reference = reference_state(x, y)
    for name in ("sums.0", "counts.0"):
        torch.testing.assert_close(
            final.learner.tensors[name], reference.tensors[name], rtol=1e-12, atol=0
        )


@pytest.mark.parametrize(
    ("client", "options", "problem"),
    [
        ("kafka-python", {"no_such_option": 1}, "kafka.options: kafka-python knows no option"),
        ("confluent", {"no.such.property": "1"}, "kafka.options for confluent-kafka"),
    ],
)
def test_options_the_kafka_client_refuses_are_exit_2_with_one_line_before_serving(
    tmp_path, client, options, problem
):
    config = serve_config(
        tmp_path, "badopt", "127.0.0.1:9", "t", client, kafka={"options": options}, problem=SMALL
    )
    config["metrics"]["port"] = None
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    done = streamcl("serve", "--config", str(path), "--log-format", "console", timeout=60)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()  # nothing else: it stopped before serving
    assert line.startswith("streamcl: error: ") and problem in line, line


def _slow_er(seconds: float) -> tuple[dict, int]:
    """An er learner and a step count that make a micro-batch of 16 (and 16 replayed) take
    about ``seconds`` on this machine, with one thread: a fixed count of a fixed model took 3 s
    on one machine and 0.4 s on another, which then never needed a keep-alive. The model
    widens until the count fits ``online_iter``'s bound of 1000."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for width in (1024, 2048, 4096):
            options = {"backbone": {"hidden": [width, width]}}
            learner = registry.create("er", PROBLEM, options)
            x, y = valid_samples(32, seed=3)
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            learner.learn(x[:16], y[:16], None, iterations=1)  # the memory holds a batch
            started = time.perf_counter()
            learner.learn(x[16:], y[16:], None, iterations=10)
            steps = round(seconds / ((time.perf_counter() - started) / 10))
            if steps <= 1000:
                return {"name": "er", "threads": 1, "options": options}, max(10, steps)
    finally:
        torch.set_num_threads(threads)
    raise AssertionError(f"no er here takes {seconds} s a micro-batch within 1000 steps")


def test_a_learner_slower_than_the_poll_interval_keeps_its_group_membership(kafka_broker, tmp_path):
    """er taking enough gradient steps per micro-batch to spend about three seconds on each,
    longer than the group's max_poll_interval_ms of 2 s."""
    topic = Topic(kafka_broker.bootstrap, "slow-learner", partitions=1)
    x, y = valid_samples(32, seed=2)
    for i in range(len(y)):
        topic.send(encode_json(x[i], int(y[i])), 0)
    topic.flush()
    learner, steps = _slow_er(3.0)
    config = serve_config(
        tmp_path, "slow", kafka_broker.bootstrap, topic.name, "kafka-python",
        learner=learner, loop={"batch_size": 16, "online_iter": steps},
        kafka={"max_poll_records": 32}, checkpoint={"every_seconds": 60}, problem=SMALL,
    )  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "slow")
    daemon.start()
    try:
        daemon.wait_for(lambda e: e["event"] == "partitions_paused_while_learning", timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if scrape(daemon).get('streamcl_samples_total{learner="er"}') == len(y):
                break
            time.sleep(0.5)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    events = [e["event"] for e in daemon.events()]
    assert events.count("partitions_assigned") == 1, "the group took the partition away"
    final = daemon.latest_checkpoint()
    assert final.meta["offsets"] == {"0": len(y)} and final.meta["counters"]["samples"] == len(y)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def healthz(process: ServeProcess) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{process.config['metrics']['port']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_full_filesystem_under_dead_letters_and_checkpoints_is_survived_and_loses_nothing(
    kafka_broker, tmp_path
):
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        topic = Topic(kafka_broker.bootstrap, "full-disk", partitions=1)
        x, y = valid_samples(60, seed=3)
        config = serve_config(
            tmp_path, "full", kafka_broker.bootstrap, topic.name, "kafka-python",
            checkpoint={"dir": str(disk / "ckpt"), "every_seconds": 0.2,
                        "unhealthy_after_failures": 2},
            dead_letter={"file": str(disk / "dead.jsonl")},
            kafka={"retry_backoff_seconds": 0.2, "retry_backoff_max_seconds": 0.5},
            problem=SMALL,
        )  # fmt: skip
        daemon = ServeProcess(config, tmp_path, "full")
        daemon.start()
        try:
            daemon.wait_for(lambda e: e["event"] == "partitions_assigned", timeout=60)
            filler = disk / "filler"
            # fill the disk to the last byte
            with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 512)
            for i in range(len(y)):
                topic.send(encode_json(x[i], int(y[i])), 0)
                if i % 10 == 9:
                    topic.send(b"not json", 0, "undecodable")
            topic.flush()
            daemon.wait_for(lambda e: e["event"] == "checkpoint_failed", timeout=60)
            deadline = time.monotonic() + 60
            while healthz(daemon)[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            status, health = healthz(daemon)
            assert status == 503 and health["status"] == "failing", health
            assert "checkpoint" in health["problems"]
            metrics = scrape(daemon)
            assert metrics['streamcl_samples_total{learner="nmc"}'] == len(y)  # learning went on
            assert metrics['streamcl_storage_failures_total{what="checkpoint"}'] >= 2
            filler.unlink()  # space is back
            final = daemon.wait_until_learned(topic.ends, timeout=60)
            assert healthz(daemon)[0] == 200
            assert daemon.terminate() == 0
        finally:
            daemon.stop()
        letters = [json.loads(line) for line in (disk / "dead.jsonl").read_text().splitlines()]
        assert [(d["partition"], d["offset"], d["reason"]) for d in letters] == topic.invalid
        assert final.meta["counters"]["samples"] == len(y)
        torch.testing.assert_close(
            final.learner.tensors["sums.0"],
            reference_state(x, y).tensors["sums.0"],
            rtol=1e-12,
            atol=0,
        )
