"""A soak run: 2 M samples through the daemon; memory, checkpoint size and time stay flat.

The daemon's own loop (``Daemon.step``: poll, decode, validate, predict, learn, anytime
evaluation, checkpoints with their offsets, the evaluation history) reads binary micro-batch
messages of the digits training set (64 samples each, labels shuffled per message) from an
in-process source that stands in for the Kafka consumer, so the figures are the daemon's and
not a broker's. ``nmc`` learns; the digits test split is evaluated every 1000 samples (2000
evaluations over the run); a checkpoint is written every 10 000 samples.

At 10 %, 50 % and 100 % of the run it records the resident memory (VmRSS), the size of the
newest checkpoint file and the median time of the last 20 checkpoints; the figures at 50 % and
100 % must each be at most 1.1x those at 10 % (the issue's bound: state kept is flat in the
number of samples). Checkpoint time is bounded as CPU time (encoding, hashing, writing: what
grows with the state); the wall time is reported too, but it is dominated by ``fsync``, which
on a disk shared with other work varies by tens of percent from one checkpoint to the next.
Before this, every evaluation ever made was kept in memory and rewritten into every checkpoint
(the issue measured 52 KB growing to 199 KB over 60k samples).

    python -m bench soak                    # 2 M samples
    python -m bench.soak [--samples N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import bench.output
from stream.daemon.checkpoint import CheckpointStore
from stream.daemon.config import KafkaConfig, ServeConfig
from stream.daemon.serve import Daemon
from stream.data.datasets import as_float_tensor, load_dataset
from stream.sources.kafka_source import AssignHandler, ErrorHandler, KafkaSource, Record
from stream.sources.wire import encode_binary

MARKS = (0.1, 0.5, 1.0)
BOUND = 1.1
WINDOW = 20  # checkpoints whose median time is reported at each mark


class GeneratedTopic(KafkaSource):
    """One partition of ``messages`` binary messages, cycled from a pool, read in order."""

    def __init__(self, messages: int, per_message: int, seed: int = 0) -> None:
        dataset = load_dataset("digits")
        x = as_float_tensor(dataset.X_train).numpy()
        rng = np.random.default_rng(seed)
        self.pool = []
        for _ in range(64):
            rows = rng.integers(0, len(x), per_message)
            self.pool.append(encode_binary(x[rows], dataset.y_train[rows]))
        self.messages = messages
        self.position = 0
        self.assigned = False

    def bind(
        self, config: KafkaConfig, on_assign: AssignHandler, on_error: ErrorHandler
    ) -> GeneratedTopic:
        self.on_assign = on_assign
        return self

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        if not self.assigned:
            self.position = self.on_assign([0]).get(0, 0)
            self.assigned = True
        end = min(self.position + max_records, self.messages)
        records = [Record(0, o, self.pool[o % len(self.pool)]) for o in range(self.position, end)]
        self.position = end
        return records

    def assignment(self) -> list[int]:
        return [0]

    def end_offsets(self, partitions: list[int], timeout: float) -> dict[int, int]:
        return {0: self.messages}

    def highwater(self, partitions: list[int]) -> dict[int, int]:
        return {0: self.messages}

    def commit(self, offsets: dict[int, int]) -> None:
        pass

    def close(self) -> None:
        pass


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(samples: int, per_message: int, work: Path) -> list[dict[str, Any]]:
    config = ServeConfig.model_validate({
        "kafka": {"bootstrap": "127.0.0.1:9", "topic": "soak", "max_poll_records": 64},
        "evaluation": {"dataset": "digits"},
        "learner": {"name": "nmc", "threads": 1},
        "loop": {"batch_size": 256, "eval_period": 1000},
        "checkpoint": {"dir": str(work / "ckpt"), "every_samples": 10_000, "every_seconds": 3600},
        "dead_letter": {"file": str(work / "dead.jsonl")},
        "metrics": {"port": None},
    })  # fmt: skip
    messages = samples // per_message
    source = GeneratedTopic(messages, per_message)
    daemon = Daemon(config, source_factory=source.bind)
    durations: list[tuple[float, float]] = []  # (wall, CPU) seconds of each checkpoint
    checkpoint = daemon.checkpoint

    def timed_checkpoint() -> None:
        before = daemon.checkpointed_samples
        wall, cpu = time.perf_counter(), time.process_time()
        checkpoint()
        if daemon.checkpointed_samples != before:
            durations.append((time.perf_counter() - wall, time.process_time() - cpu))

    daemon.checkpoint = timed_checkpoint  # type: ignore[method-assign]
    store = CheckpointStore(work / "ckpt")
    rows = []
    marks = [int(m * messages * per_message) for m in MARKS]
    started = time.perf_counter()
    daemon.connect()
    try:
        while marks:
            daemon.step()
            if daemon.loop.samples_seen >= marks[0]:
                marks.pop(0)
                newest = store.files()[0][1]
                rows.append({
                    "samples": daemon.loop.samples_seen,
                    "rss_bytes": resident_bytes(),
                    "checkpoint_bytes": newest.stat().st_size,
                    "checkpoint_seconds": statistics.median(d[1] for d in durations[-WINDOW:]),
                    "checkpoint_wall_seconds": statistics.median(
                        d[0] for d in durations[-WINDOW:]
                    ),
                    "evaluations": daemon.loop.evaluations.counts["periodic"],
                    "elapsed_seconds": time.perf_counter() - started,
                })  # fmt: skip
    finally:
        daemon.close()
    history = sum(p.stat().st_size for p in (work / "ckpt" / "history").iterdir())
    rows[-1]["history_bytes"] = history
    return rows


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--message-batch", type=int, default=64, help="samples per message")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        rows = soak(args.samples, args.message_batch, Path(work))
    first = rows[0]
    print(
        f"{'samples':>10} {'RSS MiB':>9} {'ckpt bytes':>11} {'ckpt CPU ms':>12} "
        f"{'ckpt wall ms':>13} {'evals':>6}"
    )
    for row in rows:
        print(
            f"{row['samples']:>10,} {row['rss_bytes'] / 2**20:>9.1f} {row['checkpoint_bytes']:>11,}"
            f" {row['checkpoint_seconds'] * 1000:>12.2f}"
            f" {row['checkpoint_wall_seconds'] * 1000:>13.2f}"
            f" {row['evaluations']:>6}"
        )
    ratios = {
        key: [row[key] / first[key] for row in rows]
        for key in ("rss_bytes", "checkpoint_bytes", "checkpoint_seconds")
    }
    meets = all(max(values) <= BOUND for values in ratios.values())
    for key, values in ratios.items():
        print(f"{key}: " + ", ".join(f"{v:.3f}x" for v in values) + " of the 10% figure")
    print(
        f"{rows[-1]['samples']:,} samples in {rows[-1]['elapsed_seconds']:.0f} s; "
        f"history {rows[-1]['history_bytes']:,} bytes on disk; "
        f"every figure <= {BOUND}x the 10% one: {'met' if meets else 'NOT met'}"
    )
    results = {"settings": vars(args), "rows": rows, "ratios": ratios, "meets_bound": meets}
    bench.output.write("soak", results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
