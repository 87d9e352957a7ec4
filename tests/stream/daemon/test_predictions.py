"""``streamcl serve`` with ``[predictions]`` against a real broker (tansu): the serving side.

An unlabelled digits stream whose labels arrive 500 samples late is published (``streamcl
publish --label-delay 500``); the daemon is
killed with ``kill -9`` twice while it serves. Afterwards every request has exactly one
prediction on the predictions topic, every sample was learned once, and the prequential
accuracy (scored on the predictions served) equals ``streamcl replay --label-delay 500`` of the
same stream.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from stream.cli import main as cli
from stream.data.datasets import load_dataset
from stream.data.stream_file import read_stream
from stream.engine.metrics import PrequentialAccuracy
from stream.sinks.delayed_messages import delayed_messages
from stream.sinks.kafka_sink import open_sink
from tests.support.serve_process import FAST_GROUP, ServeProcess, free_port
from tests.support.topic_reader import read_topic

DELAY = 500
pytestmark = pytest.mark.kafka


def wait_for_predictions(bootstrap: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(read_topic(bootstrap, "serve-out")) < count:
        assert time.monotonic() < deadline, f"{count} predictions not published in {timeout} s"
        time.sleep(0.2)


def wait_for_learned(port: int, count: int, timeout: float = 60) -> None:
    """Until the daemon's ``streamcl_samples_total`` reaches ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(r'^streamcl_samples_total\{learner="nmc"\} (\S+)$', text, re.M)
        if found and float(found.group(1)) >= count:
            return
        assert time.monotonic() < deadline, f"{count} samples not learned in {timeout} s"
        time.sleep(0.1)


def test_delayed_labels_are_served_once_across_kill_9_and_scored_as_a_replay(
    kafka_broker, tmp_path
):
    stream_path = tmp_path / "digits.scl"
    schedule = ["schedule", "si-blurry", "--dataset", "digits", "--seed", "3"]
    assert cli.main([*schedule, "--out", str(stream_path)]) == 0
    stream = read_stream(stream_path)
    # First a bad request, a bad label and a label no request waits for: dead-lettered twice,
    # and unmatched once (it learns nothing).
    bad = [
        (b'{"id": 1, "x": [1.0, 2.0]}', 0),
        (b'{"id": 2, "y": 10}', 0),
        (b'{"id": 123456, "y": 1}', 0),
    ]
    messages = bad + list(delayed_messages(stream, load_dataset("digits"), "json", DELAY))
    first, second = len(bad) + 1300, len(bad) + 2100  # each part ends with a label
    sink = open_sink("confluent", kafka_broker.bootstrap)
    sink.ensure_topic("serve-in", 1)

    def requests(stop: int) -> int:
        """The requests among messages ``0:stop``."""
        return sum(count for _, count in messages[:stop])

    def publish(start: int, stop: int) -> int:
        """Send messages ``start:stop``; the requests among messages ``0:stop``."""
        for message, _ in messages[start:stop]:
            sink.send("serve-in", message, partition=0)
        sink.flush()
        return requests(stop)

    config = {
        "kafka": {
            "bootstrap": kafka_broker.bootstrap, "topic": "serve-in", "client": "confluent",
            "group": "serving", "max_poll_records": 20, **FAST_GROUP,
        },
        "problem": {"input_shape": [64], "num_classes": [10]},
        "learner": {"name": "nmc"},
        "loop": {"batch_size": 16},
        # Checkpoints only at a clean stop (SIGTERM), until the last run.
        "checkpoint": {
            "dir": str(tmp_path / "ckpt"), "every_samples": 10**9, "every_seconds": 3600,
        },
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "predictions": {"topic": "serve-out", "top_k": 3},
        "metrics": {"port": free_port()},
    }  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "serving")
    try:
        # Up to request 900 and label 400, then a clean stop: a checkpoint
        # with requests pending for their labels.
        daemon.start()
        wait_for_predictions(kafka_broker.bootstrap, publish(0, first))
        wait_for_learned(config["metrics"]["port"], first - len(bad) - requests(first))
        assert daemon.terminate() == 0
        checkpointed = daemon.latest_checkpoint()
        assert checkpointed.meta["offsets"] == {"0": first}
        assert len(checkpointed.meta["serving"]["loop"]["join"]["requests"]) == DELAY
        # Then up to request 1300, every request answered, and kill -9: nothing of it checkpointed.
        daemon.start()
        wait_for_predictions(kafka_broker.bootstrap, publish(first, second))
        daemon.kill9()
        assert daemon.latest_checkpoint().meta["offsets"] == {"0": first}
        # Messages no daemon of this problem published, on the predictions topic: read back
        # after the restart, they are passed over (the first used to stop the daemon at start;
        # the last would have replaced the prediction served for that request).
        answered = next(i for i in range(first, second) if messages[i][1])
        key = f"serve-in:0:{answered}:0".encode()
        genuine = json.loads(dict(read_topic(kafka_broker.bootstrap, "serve-out"))[key])
        assert genuine["daemon"] == (tmp_path / "ckpt" / "lineage").read_text().strip()
        forged = [
            (key, b"not json"),
            (key, b"[" * 50_000 + b"]" * 50_000),
            (key, json.dumps({**genuine, "predicted": {"label": 10}}).encode()),
            # another daemon's answer (another checkpoint directory): never taken for its own
            (key, json.dumps({**genuine, "daemon": "0" * 32, "predicted": {"label": 1}}).encode()),
        ]
        for forged_key, value in forged:
            sink.send("serve-out", value, key=forged_key)
        sink.flush()
        # The rest, read from the checkpoint's offsets again.
        daemon.reconfigure(checkpoint={"every_seconds": 0.3})
        daemon.start()
        recovered = daemon.wait_for(lambda e: e["event"] == "predictions_recovered", 60)
        assert recovered["count"] == requests(second) - requests(first)
        unreadable = daemon.wait_for(lambda e: e["event"] == "predictions_unreadable", 10)
        assert unreadable["count"] == len(forged)
        publish(second, len(messages))
        final = daemon.wait_until_learned({0: len(messages)}, timeout=120)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        sink.close()

    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["offset"], d["reason"]) for d in letters] == [
        (0, "wrong_dimension"),
        (1, "label_out_of_range"),
    ]
    unmatched = [e for e in daemon.events(since_start=False) if e["event"] == "label_unmatched"]
    assert [e["ids"] for e in unmatched] == [[123456]]
    published = [m for m in read_topic(kafka_broker.bootstrap, "serve-out") if m not in forged]
    ids = sorted(json.loads(value)["id"] for _, value in published)
    assert ids == sorted(stream.id.tolist()), "one prediction per request"
    assert len({key for key, _ in published}) == len(published)
    last = json.loads(published[-1][1])
    assert set(last) >= {"id", "predicted", "top_k", "position", "latency_seconds", "request"}
    assert final.meta["loop"]["samples_seen"] == len(stream)

    replayed = tmp_path / "replay"
    replay = ["replay", str(stream_path), "--learner", "nmc"]
    assert cli.main([*replay, "--label-delay", str(DELAY), "--out", str(replayed)]) == 0
    results = json.loads((replayed / "results.json").read_text())
    served = PrequentialAccuracy([1000])
    served.load_state_dict(final.meta["loop"]["prequential"])
    assert served.cumulative == results["prequential_accuracy"]
    assert results["predictions"] == len(stream)
