"""``streamcl demo --daemon``: the whole deployment on embedded defaults, in well under a minute.

1. start the bundled tansu broker on a free loopback port (stream/runs/embedded_broker.py);
2. schedule digits under Si-Blurry and publish it, paced, as prediction requests whose labels
   follow ``label_delay`` samples later (``streamcl publish --label-delay``);
3. run the daemon (the object ``streamcl serve`` runs: ``nmc``, anytime evaluation on the digits
   test split, ``[predictions]`` on, ``/metrics`` and ``POST /predict`` on a free port) and print
   a live line per second: samples learned per second, prequential accuracy (scored on the
   predictions served before the labels came), anytime accuracy, lag, predictions served;
4. once everything is learned, answer one ``POST /predict`` over HTTP;
5. stop the daemon (final checkpoint), the endpoint and the broker: no process or port is left.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.daemon.checkpoint import CheckpointError, CheckpointStore
from stream.daemon.config import ServeConfig
from stream.daemon.predict_http import add_predict_route
from stream.daemon.serve import Daemon
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule
from stream.observe.http_endpoint import start_metrics_server
from stream.runs.demo import DATASET, PARAMS, SCHEDULE, SEED
from stream.runs.embedded_broker import EmbeddedBroker, free_port
from stream.sinks.delayed_messages import delayed_messages
from stream.sinks.kafka_sink import open_sink

TOPIC = "digits"
# Short group timeouts: tansu assigns partitions only after a whole rebalance timeout.
GROUP = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 2000,
    "request_timeout_ms": 2000,
    "max_poll_records": 64,
}


def _config(bootstrap: str, workdir: Path, port: int) -> ServeConfig:
    return ServeConfig.model_validate(
        {
            "kafka": {"bootstrap": bootstrap, "topic": TOPIC, "client": "confluent", **GROUP},
            "evaluation": {"dataset": DATASET},
            "learner": {"name": "nmc", "threads": 1},
            "loop": {"batch_size": 16, "eval_period": 200},
            "checkpoint": {"dir": str(workdir / "checkpoints"), "every_seconds": 2},
            "dead_letter": {"file": str(workdir / "dead-letters.jsonl")},
            "predictions": {"topic": f"{TOPIC}-predictions", "top_k": 3},
            "metrics": {"port": port},
        }
    )


def _percent(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


# Marks a checkpoint folder as the demo's own, which the next demo may delete.
DEMO_MARKER = ".streamcl-demo"


def _remove_demo_checkpoints(checkpoints: Path) -> None:
    """Delete an earlier demo's ``checkpoints``: only a folder the demo marked, and not while a
    demo still runs there (it holds the folder's lock)."""
    if not (checkpoints / DEMO_MARKER).is_file():
        raise CheckpointError(
            f"{checkpoints} exists and is not a checkpoint folder of the demo's; give --out a "
            "folder of its own"
        )
    store = CheckpointStore(checkpoints)
    store.lock()  # CheckpointLocked while another demo runs there
    store.unlock()
    shutil.rmtree(checkpoints)


def run_daemon_demo(
    workdir: str | Path,
    label_delay: int = 200,
    rate: float = 150.0,
    timeout: float = 55.0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo in ``workdir`` (checkpoints, dead letters); its final figures."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    checkpoints = workdir / "checkpoints"
    if checkpoints.exists():
        # Every demo starts an empty broker: a checkpoint from an earlier run would resume at
        # offsets this topic never reaches, and the daemon would learn nothing.
        _remove_demo_checkpoints(checkpoints)
        echo(
            f"removed the previous run's checkpoints in {checkpoints}: the demo's broker starts empty"
        )
    checkpoints.mkdir()
    (checkpoints / DEMO_MARKER).write_text("checkpoints of `streamcl demo --daemon`\n")
    dataset = load_dataset(DATASET)
    schedule, params = make_schedule(SCHEDULE, dataset, PARAMS, SEED)
    stream = record_schedule(dataset, schedule, SCHEDULE, params.model_dump(mode="json"), SEED)
    with EmbeddedBroker() as broker:
        echo(f"tansu broker on {broker.bootstrap}; {len(stream)} digits, labels {label_delay} late")
        creator = open_sink("confluent", broker.bootstrap)
        creator.ensure_topic(TOPIC)  # before the daemon subscribes, so it finds the topic
        creator.close()
        port = free_port()
        daemon = Daemon(_config(broker.bootstrap, workdir, port))
        assert daemon.predictions is not None
        server = start_metrics_server(daemon.telemetry, port=port)
        add_predict_route(server, daemon)
        serving = threading.Thread(target=daemon.run, name="streamcl-demo-daemon", daemon=True)
        published = {"messages": 0, "done": False}
        publisher = threading.Thread(
            target=_publish,
            args=(
                broker.bootstrap,
                delayed_messages(stream, dataset, "binary", label_delay),
                rate,
                published,
            ),
            name="streamcl-demo-publisher",
            daemon=True,
        )
        echo(f"daemon: /metrics and POST /predict on {server.url}")
        serving.start()
        publisher.start()
        try:
            last_samples, last_time = 0, time.monotonic()
            while True:
                time.sleep(1.0)
                now = time.monotonic()
                learned = daemon.loop.samples_seen
                # Never negative: with a fresh broker and fresh checkpoints the daemon is at most
                # ahead by a message sent but not yet counted.
                lag = max(published["messages"] - sum(daemon.positions.values()), 0)
                evaluation = daemon.loop.last_evaluation
                echo(
                    f"{now - started:5.1f} s  learned {learned:5d}  "
                    f"{(learned - last_samples) / (now - last_time):6.0f} samples/s  "
                    f"prequential {_percent(daemon.loop.prequential.cumulative)}  "
                    f"anytime {_percent(None if evaluation is None else evaluation.accuracy)}  "
                    f"lag {lag:4d}  predictions {daemon.predictions.serving.predictions:5d}"
                )
                last_samples, last_time = learned, now
                if published["done"] and lag == 0 and learned == len(stream):
                    break
                if now - started > timeout:
                    raise RuntimeError(f"the demo did not finish within {timeout:g} s")
            answer = _predict_over_http(port, as_float_tensor(dataset.X_test[:3]).numpy())
            truth = dataset.y_test[:3].tolist()
            predicted = [p["predicted"]["label"] for p in answer["predictions"]]
            echo(
                f"POST /predict of 3 test digits: predicted {predicted}, true {truth} "
                f"({1000 * answer['latency_seconds']:.1f} ms, model after {answer['position']} samples)"
            )
        finally:
            daemon.stop()
            serving.join(30)
            server.stop()
            publisher.join(30)
    summary = {
        "samples": daemon.loop.samples_seen,
        "predictions": daemon.predictions.serving.predictions,
        "prequential_accuracy": daemon.loop.prequential.cumulative,
        "anytime_accuracy": None if evaluation is None else evaluation.accuracy,
        "seconds": time.monotonic() - started,
    }
    echo(
        f"done in {summary['seconds']:.1f} s: daemon stopped with a final checkpoint in "
        f"{workdir / 'checkpoints'}, broker stopped"
    )
    return summary


def _publish(bootstrap: str, messages: Any, rate: float, published: dict[str, Any]) -> None:
    sink = open_sink("confluent", bootstrap)
    begun = time.monotonic()
    samples = 0
    for message, count in messages:
        sink.send(TOPIC, message, partition=0)
        published["messages"] += 1
        samples += count
        ahead = begun + samples / rate - time.monotonic()
        if ahead > 0:
            sink.flush()
            time.sleep(ahead)
    sink.flush()
    sink.close()
    published["done"] = True


def _predict_over_http(port: int, x: np.ndarray) -> dict[str, Any]:
    body = json.dumps(
        {"samples": [{"id": i, "x": row.ravel().tolist()} for i, row in enumerate(x)]}
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"POST /predict answered {response.status}: {answer}")
    return answer
