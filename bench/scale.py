"""Scale-out: samples/s of 1 and 2 workers on one topic, and the cost of a sync point.

Two measurements and a model, all on this machine (2 cores: two workers are the most that run
in parallel here, so larger groups are modelled, not measured):

1. **Throughput.** A tansu broker, a topic of ``--partitions`` partitions filled with 64-d
   features, and ``torchrun --nproc-per-node K -m stream serve`` (gloo) learning it with acil
   (buffer ``--dim``) for K = 1 and 2, in back-to-back pairs (``--repeats``; medians, and the
   paired ratio, since the machine may be shared). Samples/s counts from the moment the last
   rank has its partitions to the moment the manifest of the checkpoint that covers the whole
   topic is written, so group start-up (interpreters, rendezvous) is left out.
2. **Sync cost.** ``StatisticsSync.synchronize`` (increment, all-reduce, add) of an acil learner
   of width d, for d in ``--sync-dims`` and world sizes 1, 2 (and 4, oversubscribed: read it as
   an upper bound), median of ``--sync-repeats``.
3. **Model.** A ring all-reduce of S bytes over K ranks costs about 2(K-1)/K · S/B + 2(K-1)·a;
   B and a are fitted to the K = 2 sync costs, which then give the sync cost for larger K. With
   r the samples/s of one worker and E = ``sync.every_samples``, K workers learn E samples in
   E/(K r) seconds and then sync, so throughput(K) = E / (E/(K r) + sync(K)): it stops scaling
   where the sync time approaches the learning time between syncs.

    python -m bench scale                   # the defaults (a few minutes)
    python -m bench.scale [--samples N] [--dim D] [--sync-dims 256 1024 2048]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import bench.output
from bench.daemon import Tansu
from learners import registry
from learners.base import Problem
from stream.daemon.aligned_checkpoint import MANIFEST, AlignedCheckpoints
from stream.daemon.distributed import Collectives, World
from stream.daemon.statistics_sync import StatisticsSync
from stream.sinks.kafka_sink import open_sink
from stream.sources.wire import encode_binary

DIM, CLASSES = 64, 10
REPO = Path(__file__).resolve().parents[1]


def fill(bootstrap: str, topic: str, samples: int, partitions: int, batch: int = 64) -> dict:
    """``samples`` random samples in binary messages dealt over the partitions; the end
    offset of each partition."""
    rng = np.random.default_rng(0)
    sink = open_sink("confluent", bootstrap, {"queue.buffering.max.kbytes": 1 << 20})
    sink.ensure_topic(topic, partitions)
    ends = dict.fromkeys(range(partitions), 0)
    for number, start in enumerate(range(0, samples, batch)):
        n = min(batch, samples - start)
        x = rng.normal(size=(n, DIM)).astype(np.float32)
        sink.send(
            topic, encode_binary(x, rng.integers(0, CLASSES, n)), partition=number % partitions
        )
        ends[number % partitions] += 1
    sink.flush(300)
    sink.close()
    return ends


def group_throughput(
    bootstrap: str, topic: str, ends: dict, workers: int, args: argparse.Namespace, work: Path
) -> float:
    """Samples/s of ``workers`` ranks learning the whole topic."""
    name = f"{topic}-{workers}-{time.monotonic_ns()}"
    config = {
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group": name, "client": "confluent",
                  "poll_timeout_seconds": 0.05, "max_poll_records": 64},
        "problem": {"input_shape": [DIM], "num_classes": [CLASSES]},
        "learner": {"name": "acil", "options": {"buffer_size": args.dim}, "threads": 1},
        "loop": {"batch_size": 256, "eval_period": None},
        "checkpoint": {"dir": str(work / name), "every_samples": args.samples,
                       "every_seconds": 3600},
        "sync": {"every_samples": args.sync_every},
        "dead_letter": {"file": str(work / f"{name}.dead.jsonl")},
        "metrics": {"port": None},
    }  # fmt: skip
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(workers), "-m", "stream", "serve", "--config", str(path),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    store = AlignedCheckpoints(work / name)
    wanted = {str(p): o for p, o in ends.items()}
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            manifest = store.latest()
            if manifest is not None and manifest["offsets"] == wanted:
                break
            if process.poll() is not None:
                raise RuntimeError(f"the group exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            raise RuntimeError("the group did not learn the topic within 600 s")
        done = (store.epoch_dir(int(manifest["epoch"])) / MANIFEST).stat().st_mtime
    finally:
        process.terminate()
        process.wait(60)
    assigned = [
        datetime.datetime.fromisoformat(event["timestamp"]).timestamp()
        for event in _events(log)
        if event.get("event") == "partitions_assigned"
    ]
    return args.samples / (done - max(assigned))


def _events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _sync_worker(rank: int, size: int, port: int, dims: list[int], repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size
    )
    problem = Problem(input_shape=(DIM,), num_classes=(CLASSES,))
    results = {}
    for dim in dims:
        learner = registry.create("acil", problem, {"buffer_size": dim})
        sync = StatisticsSync(learner, Collectives(World(rank, size), torch.device("cpu")))
        x = torch.randn(64, DIM)
        seconds = []
        for _ in range(repeats):
            learner.learn(x, torch.randint(0, CLASSES, (64,)), torch.zeros(64, dtype=torch.long))
            dist.barrier()
            started = time.perf_counter()
            sync.synchronize()
            seconds.append(time.perf_counter() - started)
        results[dim] = statistics.median(seconds)
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def sync_costs(sizes: list[int], dims: list[int], repeats: int, work: Path) -> dict:
    """Median seconds of one sync point, per world size and width."""
    costs = {}
    for size in sizes:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        out = work / f"sync-{size}.json"
        mp.spawn(_sync_worker, args=(size, port, dims, repeats, str(out)), nprocs=size)
        costs[size] = {int(d): s for d, s in json.loads(out.read_text()).items()}
    return costs


def statistics_bytes(dim: int) -> int:
    """What one acil sync all-reduces: HᵀH, HᵀY and the counts, float64."""
    return 8 * (dim * dim + dim * CLASSES + CLASSES)


def fit_ring(costs: dict[int, float]) -> tuple[float, float]:
    """(bandwidth B in bytes/s, latency a in s) of 2(K-1)/K·S/B + 2(K-1)·a at K = 2, by least
    squares over the widths: cost = S/B + 2a."""
    sizes = np.array([statistics_bytes(d) for d in costs], dtype=np.float64)
    seconds = np.array(list(costs.values()))
    slope, intercept = np.polyfit(sizes, seconds, 1)
    return 1.0 / max(slope, 1e-15), max(intercept / 2, 0.0)


def ring_cost(size: int, nbytes: int, bandwidth: float, latency: float) -> float:
    return 2 * (size - 1) / size * nbytes / bandwidth + 2 * (size - 1) * latency


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--samples", type=int, default=24_000, help="samples in the topic")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--dim", type=int, default=1024, help="acil buffer width d")
    parser.add_argument("--sync-every", type=int, default=2_000, help="sync.every_samples")
    parser.add_argument("--repeats", type=int, default=2, help="1-worker/2-worker pairs")
    parser.add_argument("--sync-dims", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--sync-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sync-repeats", type=int, default=7)
    parser.add_argument("--model-sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        costs = sync_costs(args.sync_sizes, args.sync_dims, args.sync_repeats, work)
        broker = Tansu()
        try:
            ends = fill(broker.bootstrap, "scale", args.samples, args.partitions)
            one, two = [], []
            for _ in range(args.repeats):
                one.append(group_throughput(broker.bootstrap, "scale", ends, 1, args, work))
                two.append(group_throughput(broker.bootstrap, "scale", ends, 2, args, work))
        finally:
            broker.stop()
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    single = statistics.median(one)
    measured_sizes = [s for s in args.sync_sizes if s > 1]
    bandwidth, latency = fit_ring(costs[2]) if 2 in costs else (float("nan"), float("nan"))
    nbytes = statistics_bytes(args.dim)
    modelled = {}
    for size in args.model_sizes:
        sync = ring_cost(size, nbytes, bandwidth, latency)
        learn = args.sync_every / (size * single)
        modelled[size] = {
            "sync_seconds": sync,
            "samples_per_second": args.sync_every / (learn + sync),
            "efficiency": (args.sync_every / (learn + sync)) / (size * single),
        }
    print(f"throughput, acil d={args.dim}, {args.samples} samples, {args.partitions} partitions")
    print(
        f"  1 worker : {single:>10,.0f} samples/s   (runs: {', '.join(f'{v:,.0f}' for v in one)})"
    )
    print(f"  2 workers: {statistics.median(two):>10,.0f} samples/s   "
          f"(runs: {', '.join(f'{v:,.0f}' for v in two)})")  # fmt: skip
    print(f"  2 workers / 1 worker, paired: {statistics.median(ratios):.2f}x (measured)")
    print("sync point (increment + all-reduce + add), median seconds (measured):")
    print("  d      " + "".join(f"K={s:<9}" for s in args.sync_sizes) + "MiB")
    for dim in args.sync_dims:
        row = "".join(f"{costs[s][dim]:<11.4f}" for s in args.sync_sizes)
        print(f"  {dim:<6} {row}{statistics_bytes(dim) / 2**20:.1f}")
    print(f"ring fit at K=2: B = {bandwidth / 2**30:.2f} GiB/s, a = {latency * 1e6:.0f} us")
    print(
        f"modelled, d={args.dim}, sync every {args.sync_every} samples, r = {single:,.0f}/s/worker:"
    )
    for size, row in modelled.items():
        print(f"  K={size:<3} sync {row['sync_seconds']:.4f} s  {row['samples_per_second']:>10,.0f} "
              f"samples/s  efficiency {row['efficiency']:.0%}")  # fmt: skip
    results = {
        "settings": vars(args),
        "measured": {
            "one_worker": one, "two_workers": two, "paired_ratio": statistics.median(ratios),
            "sync_seconds": {str(s): {str(d): v for d, v in c.items()} for s, c in costs.items()},
            "oversubscribed_sizes": [s for s in measured_sizes if s > (os.cpu_count() or 1)],
        },
        "modelled": {
            "ring_bandwidth_bytes_per_second": bandwidth, "ring_latency_seconds": latency,
            "by_world_size": {str(s): row for s, row in modelled.items()},
        },
    }  # fmt: skip
    bench.output.write("scale", results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
