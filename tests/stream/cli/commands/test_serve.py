"""``streamcl serve`` as a process against a real broker (tansu): the issue's "done when" points.

- end to end: a published Si-Blurry digits stream plus every kind of malformed message; the
  learned-sample counter equals the valid samples and the rest is dead-lettered with its reason;
- ``kill -9`` at five random points, restarting each time: every message learned exactly once;
- the broker stopped (SIGSTOP) for 20 s: the daemon survives, reports it, loses nothing;
- each with both Kafka clients.

Exactly-once is audited with one-hot inputs: sample ``i`` is the ``i``-th unit vector, so the
class sums of ``nmc`` (exact float64 sums) count how many times each sample was learned.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learners import registry
from learners.base import Problem
from stream.cli import main as cli
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.stream_file import read_stream
from stream.sources.wire import encode_binary
from tests.support.digits_stream import write_digits_stream
from tests.support.malformed import malformed_messages
from tests.support.serve_process import (
    ServeProcess,
    Topic,
    dead_letters,
    scrape,
    serve_config,
)

CLIENTS = ["kafka-python", "confluent"]
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT]
MAX_BYTES = 16_384
pytestmark = pytest.mark.kafka


# -- end to end: a recorded Si-Blurry stream ---------------------------------------------------


@pytest.mark.parametrize(("client", "form"), [("kafka-python", "json"), ("confluent", "binary")])
def test_a_published_si_blurry_stream_is_learned_and_malformed_messages_dead_lettered(
    kafka_broker, tmp_path, client, form
):
    stream_path = tmp_path / "digits.scl"
    write_digits_stream(stream_path, seed=3)
    stream = read_stream(stream_path)
    dataset = load_dataset("digits")
    topic = Topic(kafka_broker.bootstrap, f"e2e-{client}", partitions=1)
    bad = malformed_messages(dataset.problem(), MAX_BYTES)
    for reason, message in bad[: len(bad) // 2]:
        topic.send(message, 0, reason)
    topic.flush()
    published = cli.main([
        "publish", str(stream_path), "--bootstrap", kafka_broker.bootstrap, "--topic", topic.name,
        "--format", form, "--batch", "32", "--client", client,
    ])  # fmt: skip
    assert published == 0
    topic.ends[0] += len(stream) if form == "json" else -(-len(stream) // 32)
    for reason, message in bad[len(bad) // 2 :]:
        topic.send(message, 0, reason)
    topic.flush()

    config = serve_config(
        tmp_path, "e2e", kafka_broker.bootstrap, topic.name, client,
        evaluation={"dataset": "digits"}, loop={"batch_size": 16, "eval_period": 250},
    )  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "e2e")
    daemon.start()
    try:
        daemon.wait_until_learned(topic.ends, timeout=120)
        metrics = scrape(daemon)
        assert daemon.terminate() == 0
        # Restarted with nothing new to read: /metrics shows the model it restored at once.
        daemon.start()
        daemon.wait_for(lambda e: e["event"] == "serving", timeout=60)
        restored = scrape(daemon)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    for series in (
        'streamcl_samples_total{learner="nmc"}',
        'streamcl_anytime_accuracy{learner="nmc",level="all"}',
        'streamcl_auc_accuracy{learner="nmc",level="all"}',
        'streamcl_prequential_accuracy{learner="nmc",window="cumulative"}',
        'streamcl_seen_classes{level="label"}',
    ):
        assert restored[series] == metrics[series], series

    assert metrics['streamcl_samples_total{learner="nmc"}'] == len(stream)
    for reason in {r for _, _, r in topic.invalid}:
        expected = sum(r == reason for _, _, r in topic.invalid)
        assert metrics[f'streamcl_invalid_messages_total{{reason="{reason}"}}'] == expected
    assert sorted(dead_letters(daemon)) == sorted(topic.invalid) and len(topic.invalid) >= 10
    final = daemon.latest_checkpoint()
    assert final.meta["counters"]["samples"] == len(stream)
    assert final.meta["loop"]["evaluations"]["last"], "anytime evaluations on the digits test split"
    assert metrics['streamcl_anytime_accuracy{learner="nmc",level="all"}'] > 0.5
    assert any(e["event"] == "stopped" for e in daemon.events())
    task_ends = [e for e in daemon.events(since_start=False) if e["event"] == "task_end"]
    assert task_ends and all(
        e["learner"] == "nmc" and e["topic"] == topic.name and {"partition", "offset"} <= e.keys()
        for e in task_ends
    ), "the loop's lines say which records were being learned"

    reference = registry.create("nmc", dataset.problem())
    x = as_float_tensor(dataset.X_train[np.asarray(stream.row)])
    reference.learn(
        x, torch.from_numpy(np.asarray(stream.y)), torch.from_numpy(np.asarray(stream.level))
    )
    for name in ("sums.0", "counts.0"):
        torch.testing.assert_close(
            final.learner.tensors[name], reference.state_dict().tensors[name], rtol=1e-9, atol=0
        )


# -- exactly once: the one-hot audit ------------------------------------------------------------


AUDIT_CLASSES = 4
AUDIT_PROBLEM_DIM = 600


def publish_audit(topic: Topic, ids: range, per_message: int, bad_every: int = 0) -> None:
    """Binary messages of one-hot samples dealt over the partitions, malformed ones mixed in."""
    dim = AUDIT_PROBLEM_DIM
    bad = malformed_messages(Problem(input_shape=(dim,), num_classes=(AUDIT_CLASSES,)), MAX_BYTES)
    partitions = len(topic.ends)
    for number, start in enumerate(range(ids.start, ids.stop, per_message)):
        chunk = np.arange(start, min(start + per_message, ids.stop))
        x = np.zeros((len(chunk), dim), np.float32)
        x[np.arange(len(chunk)), chunk] = 1
        topic.send(encode_binary(x, chunk % AUDIT_CLASSES, ids=chunk), number % partitions)
        if bad_every and number % bad_every == bad_every - 1 and bad:
            reason, message = bad.pop()
            topic.send(message, (number + 1) % partitions, reason)
    topic.flush()


def audit_config(
    tmp_path: Path, name: str, bootstrap: str, topic: str, client: str, **sections
) -> dict:
    problem = {"input_shape": [AUDIT_PROBLEM_DIM], "num_classes": [AUDIT_CLASSES]}
    return serve_config(
        tmp_path,
        name,
        bootstrap,
        topic,
        client,
        problem=problem,
        loop={"batch_size": 4},
        **sections,
    )


def times_learned(process: ServeProcess) -> np.ndarray:
    """How many times each sample id was learned, from the final checkpoint's class sums."""
    final = process.latest_checkpoint()
    sums = final.learner.tensors["sums.0"]
    counts = final.learner.tensors["counts.0"]
    assert torch.equal(sums.sum(1), counts), "every learned input is one unit vector"
    return sums.sum(0).numpy()


def crash_five_times(daemon: ServeProcess, total_messages: int, seed: str) -> list[int]:
    """Start the daemon and ``kill -9`` it five times, each time just after a checkpoint that
    covers a random number of messages past the last kill's (drawn in the first half of the
    stream, so every run makes progress and every kill comes before the end however fast the
    machine is); the messages its latest checkpoint covered at each kill."""
    rng = random.Random(seed)
    marks = sorted(rng.sample(range(total_messages // 10, total_messages // 2), 5))
    durable: list[int] = []
    for mark in marks:
        daemon.start()
        daemon.wait_for(
            lambda e, mark=mark: (
                e["event"] == "checkpoint_written" and sum(e["offsets"].values()) >= mark
            ),
            timeout=120,
        )
        time.sleep(rng.uniform(0.0, 0.02))
        daemon.kill9()
        offsets = daemon.latest_checkpoint().meta["offsets"]
        durable.append(sum(offsets.values()))
    assert durable == sorted(set(durable)), f"each run made progress: {durable}"
    assert durable[-1] < total_messages, f"every kill came before the end: {durable}"
    return durable


def finish(daemon: ServeProcess, ends: dict[int, int]):
    """Restart once more and let the daemon learn to the end; SIGTERM; the final checkpoint."""
    # Bigger polls and checkpoints by time only, to finish sooner.
    daemon.reconfigure(kafka={"max_poll_records": 500}, checkpoint={"every_samples": 100_000})
    daemon.start()
    try:
        final = daemon.wait_until_learned(ends, timeout=120)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    return final


@pytest.mark.parametrize("client", CLIENTS)
def test_kill_9_at_five_random_points_learns_every_message_exactly_once(
    kafka_broker, tmp_path, client
):
    n = AUDIT_PROBLEM_DIM
    topic = Topic(kafka_broker.bootstrap, f"crash-{client}", partitions=2)
    publish_audit(topic, range(n), per_message=2, bad_every=25)
    config = audit_config(
        tmp_path, "crash", kafka_broker.bootstrap, topic.name, client,
        kafka={"max_poll_records": 1}, checkpoint={"every_samples": 6, "every_seconds": 0.2},
    )  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "crash")
    try:
        crash_five_times(daemon, sum(topic.ends.values()), f"kill-9-{client}")
    finally:
        daemon.stop()
    final = finish(daemon, topic.ends)
    learned = times_learned(daemon)
    assert (learned == 1).all(), f"ids learned {sorted(set(learned.tolist()))} times"
    loop = final.meta["loop"]
    assert loop["samples_seen"] == n
    assert sorted(dead_letters(daemon)) == sorted(topic.invalid) and topic.invalid
    assert final.meta["counters"]["messages"] == sum(topic.ends.values())


def test_kill_9_five_times_and_the_acil_model_equals_an_uninterrupted_runs(kafka_broker, tmp_path):
    stream_path = tmp_path / "digits.scl"
    write_digits_stream(stream_path, seed=4)
    stream, dataset = read_stream(stream_path), load_dataset("digits")
    x = as_float_tensor(dataset.X_train[np.asarray(stream.row)])
    y, level = torch.from_numpy(np.asarray(stream.y)), torch.from_numpy(np.asarray(stream.level))
    topic = Topic(kafka_broker.bootstrap, "crash-acil", partitions=2)
    bad = malformed_messages(dataset.problem(), MAX_BYTES)
    for number, start in enumerate(range(0, len(y), 6)):
        rows = slice(start, start + 6)
        topic.send(encode_binary(x[rows].numpy(), y[rows].numpy(), level[rows].numpy()), number % 2)
        if number % 20 == 19 and bad:
            reason, message = bad.pop()
            topic.send(message, number % 2, reason)
    topic.flush()
    options = {"buffer_size": 256, "seed": 7}
    config = serve_config(
        tmp_path, "acil", kafka_broker.bootstrap, topic.name, "kafka-python",
        problem={"input_shape": [1, 8, 8], "num_classes": [10]},
        learner={"name": "acil", "options": options}, loop={"batch_size": 8},
        kafka={"max_poll_records": 1}, checkpoint={"every_samples": 12, "every_seconds": 0.2},
    )  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "acil")
    try:
        crash_five_times(daemon, sum(topic.ends.values()), "kill-9-acil")
    finally:
        daemon.stop()
    final = finish(daemon, topic.ends)

    assert final.meta["loop"]["samples_seen"] == len(y)
    assert sorted(dead_letters(daemon)) == sorted(topic.invalid)
    resumed = registry.create("acil", dataset.problem(), options)
    resumed.load_state_dict(final.learner)
    uninterrupted = registry.create("acil", dataset.problem(), options)
    uninterrupted.learn(x, y, level)
    # the buffer layer as it is; the heads by their statistics (a head's state also holds the
    # rows waiting for their Gram update and the solution its predictions cached, which depend
    # on how the samples were batched and predicted, not on what was learned)
    mine, theirs = resumed.state_dict().tensors, uninterrupted.state_dict().tensors
    buffer = sorted(name for name in theirs if not name.startswith("heads."))
    assert buffer and buffer == sorted(name for name in mine if not name.startswith("heads."))
    for name in buffer:
        assert torch.equal(mine[name], theirs[name]), name
    for a, b in zip(
        resumed.additive_statistics(), uninterrupted.additive_statistics(), strict=True
    ):
        if a.dim() == 2 and a.shape[0] == a.shape[1]:  # G: its lower triangle is kept
            a, b = a.tril(), b.tril()
        assert (a.double() - b.double()).norm() <= 1e-9 * b.double().norm()
    w_resumed, w_uninterrupted = resumed.weights(0), uninterrupted.weights(0)
    assert (w_resumed - w_uninterrupted).norm() <= 1e-9 * w_uninterrupted.norm()
    assert torch.equal(resumed.predict(x).argmax(1), uninterrupted.predict(x).argmax(1))


# -- a stalled broker ------------------------------------------------------------------------


def test_a_broker_stopped_for_20_s_is_survived_reported_and_nothing_is_lost(start_broker, tmp_path):
    broker = start_broker()
    n = AUDIT_PROBLEM_DIM
    topic = Topic(broker.bootstrap, "stall", partitions=2)
    publish_audit(topic, range(n // 2), per_message=3)
    daemons = [
        ServeProcess(audit_config(tmp_path, "stall", broker.bootstrap, topic.name, c), tmp_path, c)
        for c in CLIENTS
    ]
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            daemon.wait_until_learned(dict(topic.ends), timeout=120)
        broker.pause()
        paused = time.monotonic()
        # More samples are published while the broker is stopped; they arrive once it resumes.
        second_half = threading.Thread(target=publish_audit, args=(topic, range(n // 2, n), 3))
        second_half.start()
        for daemon in daemons:
            daemon.wait_for(lambda e: e["event"] == "broker_unreachable", timeout=20)
        reported_down = [scrape(daemon)["streamcl_broker_up"] for daemon in daemons]
        time.sleep(max(0.0, 20 - (time.monotonic() - paused)))
        broker.resume()
        second_half.join(120)
        assert not second_half.is_alive()
        for daemon in daemons:
            daemon.wait_until_learned(topic.ends, timeout=120)
        for daemon in daemons:
            daemon.wait_for(
                lambda e: e["event"] == "broker_reachable" and "down_seconds" in e, timeout=30
            )
        reported_up = [scrape(daemon)["streamcl_broker_up"] for daemon in daemons]
        codes = [
            daemon.terminate(signum) for daemon, signum in zip(daemons, STOP_SIGNALS, strict=True)
        ]
    finally:
        for daemon in daemons:
            daemon.stop()
    assert reported_down == [0, 0] and reported_up == [1, 1] and codes == [0, 0]
    for daemon in daemons:
        back = [
            e for e in daemon.events() if e["event"] == "broker_reachable" and "down_seconds" in e
        ]
        assert back[0]["down_seconds"] >= 10
        learned = times_learned(daemon)
        assert (learned == 1).all(), (
            f"{daemon.log_path.stem}: ids learned {sorted(set(learned.tolist()))} times"
        )


@pytest.mark.parametrize("client", CLIENTS)
def test_an_idle_daemon_at_the_end_of_the_topic_reports_the_broker_up(
    kafka_broker, tmp_path, client
):
    """End-offset probes on an idle topic queue behind fetches the broker holds open; they
    once timed out and an idle, healthy broker was reported down."""
    topic = Topic(kafka_broker.bootstrap, f"idle-{client}", partitions=2)
    publish_audit(topic, range(40), per_message=4)
    config = audit_config(tmp_path, "idle", kafka_broker.bootstrap, topic.name, client)
    daemon = ServeProcess(config, tmp_path, "idle")
    try:
        daemon.start()
        daemon.wait_until_learned(topic.ends, timeout=60)
        time.sleep(4 * config["kafka"]["probe_interval_seconds"])  # several probes while idle
        events = [e["event"] for e in daemon.events()]
        assert "broker_unreachable" not in events, daemon.tail()
        assert scrape(daemon)["streamcl_broker_up"] == 1.0
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_daemon_started_before_its_topic_learns_it_once_it_is_made(
    kafka_broker, tmp_path, client
):
    """librdkafka looks for a subscribed topic that does not exist at its metadata refresh,
    every 5 minutes by default: a confluent daemon started before its topic learned nothing of
    it for minutes."""
    name = f"later-{client}"
    config = audit_config(tmp_path, "later", kafka_broker.bootstrap, name, client)
    daemon = ServeProcess(config, tmp_path, "later")
    try:
        daemon.start()
        daemon.wait_for(lambda e: e["event"] == "serving", 60)
        time.sleep(2)  # the subscription found no topic
        # kafka-python's subscription may have made the topic already (tansu: 4 partitions)
        topic = Topic(kafka_broker.bootstrap, name, partitions=2, exact=False)
        publish_audit(topic, range(40), per_message=4)
        daemon.wait_until_learned(topic.ends, timeout=45)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


def test_a_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "serve.toml"
    path.write_text('[kafka]\nbootstrap = "127.0.0.1:9092"\n[learner]\nname = "nmc"\n')
    assert cli.main(["serve", "--config", str(path), "--log-format", "console"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kafka.topic: Field required" in err
