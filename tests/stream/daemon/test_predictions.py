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
import time

import pytest

from stream.cli import main as cli
from stream.data.stream_file import read_stream
from stream.engine.metrics import PrequentialAccuracy
from tests.support.serve_process import FAST_GROUP, ServeProcess, free_port
from tests.support.topic_reader import read_topic

DELAY = 500
pytestmark = pytest.mark.kafka


def test_delayed_labels_are_served_once_across_kill_9_and_scored_as_a_replay(
    kafka_broker, tmp_path
):
    stream_path = tmp_path / "digits.scl"
    schedule = ["schedule", "si-blurry", "--dataset", "digits", "--seed", "3"]
    assert cli.main([*schedule, "--out", str(stream_path)]) == 0
    stream = read_stream(stream_path)
    publish = ["publish", str(stream_path), "--bootstrap", kafka_broker.bootstrap]
    publish += ["--topic", "serve-in", "--format", "json", "--client", "confluent"]
    assert cli.main([*publish, "--label-delay", str(DELAY)]) == 0
    total = 2 * len(stream)
    config = {
        "kafka": {
            "bootstrap": kafka_broker.bootstrap, "topic": "serve-in", "client": "confluent",
            "group": "serving", "max_poll_records": 20, **FAST_GROUP,
        },
        "problem": {"input_shape": [64], "num_classes": [10]},
        "learner": {"name": "nmc"},
        "loop": {"batch_size": 16},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_samples": 40, "every_seconds": 3600},
        "dead_letter": {"file": str(tmp_path / "dead.jsonl")},
        "predictions": {"topic": "serve-out", "top_k": 3},
        "metrics": {"port": free_port()},
    }  # fmt: skip
    daemon = ServeProcess(config, tmp_path, "serving")
    try:
        # Labels start after request 500 (message 500): kill twice while labels are joined.
        for mark in (1300, 2100):
            daemon.start()
            daemon.wait_for(
                lambda e, mark=mark: (
                    e["event"] == "checkpoint_written" and sum(e["offsets"].values()) >= mark
                ),
                timeout=120,
            )
            time.sleep(0.3)
            daemon.kill9()
        daemon.reconfigure(checkpoint={"every_seconds": 0.3})
        daemon.start()
        final = daemon.wait_until_learned({0: total}, timeout=120)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()

    recovered = [
        e for e in daemon.events(since_start=False) if e["event"] == "predictions_recovered"
    ]
    assert recovered, "a kill left predictions published after its checkpoint"
    published = read_topic(kafka_broker.bootstrap, "serve-out")
    ids = sorted(json.loads(value)["id"] for _, value in published)
    assert ids == sorted(stream.id.tolist()), "one prediction per request"
    assert len({key for key, _ in published}) == len(published)
    first = json.loads(published[-1][1])
    assert set(first) >= {"id", "predicted", "top_k", "position", "latency_seconds", "request"}
    assert final.meta["loop"]["samples_seen"] == len(stream)

    replayed = tmp_path / "replay"
    replay = ["replay", str(stream_path), "--learner", "nmc", "--eval-period", "0"]
    assert cli.main([*replay, "--label-delay", str(DELAY), "--out", str(replayed)]) == 0
    results = json.loads((replayed / "results.json").read_text())
    served = PrequentialAccuracy([1000])
    served.load_state_dict(final.meta["loop"]["prequential"])
    assert served.cumulative == results["prequential_accuracy"]
    assert results["predictions"] == len(stream)
