"""Nearest-neighbour retrieval and insertion speed of the replay memory (memory/faiss_index.py).

In one run, on one machine: ``--stored`` (100k) embeddings of ``--dim`` (512), a batch of
``--queries`` (32) queries, their ``--k`` (10) nearest neighbours, by

- brute force, the baseline: one torch matmul ``||q||² − 2 q·x + ||x||²`` (stored norms computed
  once, outside the timing) and ``topk``; its neighbours are the truth for recall@k;
- faiss flat (exact) and faiss IVF at several ``nprobe``, each built as the memory builds it
  (:class:`memory.faiss_index.EmbeddingIndex`).

Speedup = brute-force median seconds / index median seconds over ``--repeats`` searches. Both
sides run on ``--threads`` threads (default 1: torch and faiss share one OpenMP runtime, and on a
shared machine a descheduled worker stalls every parallel region, which made the 2-thread figures
swing tenfold between runs).
Insertion: :meth:`memory.ReplayMemory.add` rate while a memory of ``--stored`` slots fills up and
then while, full, every insert evicts a sample (``class_balanced``) and so rewrites the index; each
add follows a nearest retrieval, as in an ER step, and ``embed`` is the identity, so the figures
are the memory's cost, not a backbone's.

Embeddings are synthetic but shaped like CNN features: 100 classes, each a 64-d latent centre
plus noise, through one fixed random 64→512 projection, a ReLU and a little isotropic noise
(non-negative, low intrinsic dimension, clustered by class). The queries are a stream batch:
fresh samples of 4 classes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import faiss
import torch

from bench import output
from memory import MemoryConfig, ReplayMemory
from memory.faiss_index import EmbeddingIndex, ivf_lists


class FeatureGenerator:
    """Clustered, non-negative, low-rank embeddings labelled by class."""

    def __init__(self, dim: int, classes: int = 100, latent: int = 64, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.centres = 2.0 * torch.randn(classes, latent, generator=self.generator)
        self.projection = torch.randn(latent, dim, generator=self.generator) / latent**0.5
        self.classes = classes

    def __call__(
        self, n: int, classes: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pool = torch.tensor(classes) if classes else torch.arange(self.classes)
        y = pool[torch.randint(0, len(pool), (n,), generator=self.generator)]
        z = self.centres[y] + torch.randn(n, self.centres.shape[1], generator=self.generator)
        x = torch.relu(z @ self.projection)
        x += 0.05 * torch.randn(x.shape, generator=self.generator)
        return x, y


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations, lazy index builds
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.numel()


def search_table(
    args: argparse.Namespace, stored: torch.Tensor, queries: torch.Tensor
) -> list[dict]:
    norms = (stored * stored).sum(1)

    def brute_force() -> torch.Tensor:
        distances = norms - 2 * queries @ stored.T
        return distances.topk(args.k, dim=1, largest=False).indices

    truth = brute_force()
    baseline = median_seconds(brute_force, args.repeats)
    rows = [{"method": "torch brute force", "seconds": baseline, "speedup": 1.0, "recall": 1.0}]
    indexes = [("faiss flat (exact)", EmbeddingIndex(len(stored), stored.shape[1], "flat"))]
    for nprobe in args.nprobe:
        index = EmbeddingIndex(len(stored), stored.shape[1], "ivf", nprobe=nprobe)
        indexes.append((f"faiss ivf nprobe={nprobe}", index))
    trained: EmbeddingIndex | None = None
    for name, index in indexes:
        started = time.perf_counter()
        if index.kind == "ivf" and trained is not None:
            # Same centroids for every nprobe: train once, reuse through the checkpoint path.
            index.load_state_dict(trained.state_dict())
        else:
            index.write(torch.arange(len(stored)), stored)
        index.search(queries[:1], 1)  # builds (and for ivf trains) the faiss structure
        build = time.perf_counter() - started
        if index.kind == "ivf" and trained is None:
            trained = index
        seconds = median_seconds(partial(index.search, queries, args.k), args.repeats)
        found = index.search(queries, args.k)[1]
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "speedup": baseline / seconds,
                "recall": recall(found, truth),
                "build_seconds": build,
            }
        )
    return rows


def identity(x: torch.Tensor) -> torch.Tensor:
    """The embeddings are the inputs: insertion figures are the memory's cost, not a backbone's."""
    return x


def insertion(args: argparse.Namespace, features: FeatureGenerator) -> dict[str, Any]:
    config = MemoryConfig(
        capacity=args.stored,
        policy="class_balanced",
        retrieval="nearest",
        nprobe=args.nprobe[0],
        refresh_chunk=0,
    )
    memory = ReplayMemory(config, seed=0, embed=identity)
    batch = args.queries
    fill_seconds = full_seconds = 0.0
    full_steps = 0
    while len(memory) < args.stored or full_steps < args.full_steps:
        x, y = features(batch, classes=torch.randint(0, 100, (4,)).tolist())
        if len(memory):
            memory.sample_batch(batch, query=x)
        filling = len(memory) < args.stored
        started = time.perf_counter()
        memory.add(x, y, torch.zeros_like(y))
        elapsed = time.perf_counter() - started
        if filling:
            fill_seconds += elapsed
        else:
            full_seconds += elapsed
            full_steps += 1
    assert memory.index is not None
    return {
        "fill_samples_per_second": args.stored / fill_seconds,
        "full_samples_per_second": full_steps * batch / full_seconds,
        "index": memory.index.structure,
        "ivf_lists": ivf_lists(memory.index.trained_on),
        "bytes": memory.nbytes,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--nprobe", type=lambda s: [int(v) for v in s.split(",")], default=[8, 2, 4, 16, 32]
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    parser.add_argument("--full-steps", type=int, default=200, help="insert calls timed when full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    features = FeatureGenerator(args.dim, seed=args.seed)
    stored, _ = features(args.stored)
    queries, _ = features(args.queries, classes=[3, 17, 42, 77])
    rows = search_table(args, stored, queries)
    print(
        f"{args.queries} queries, k={args.k}, over {args.stored} stored {args.dim}-d embeddings "
        f"({args.threads} thread(s); ivf lists {ivf_lists(args.stored)})"
    )
    recall_label = f"recall@{args.k}"
    print(f"{'method':<24} {'ms/batch':>9} {'speedup':>8} {recall_label:>10} {'build s':>8}")
    for row in rows:
        build = f"{row['build_seconds']:.2f}" if "build_seconds" in row else ""
        print(
            f"{row['method']:<24} {1000 * row['seconds']:>9.2f} {row['speedup']:>8.1f} "
            f"{row['recall']:>10.3f} {build:>8}"
        )
    inserts = insertion(args, features)
    print(
        f"insertion (class_balanced, nearest, batch {args.queries}): "
        f"{inserts['fill_samples_per_second']:.0f} samples/s filling to {args.stored}, "
        f"{inserts['full_samples_per_second']:.0f} samples/s full (each evicts one); "
        f"index {inserts['index']}, {inserts['bytes'] / 2**20:.0f} MiB held"
    )
    results = {
        "stored": args.stored,
        "threads": args.threads,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "embeddings": "100 classes: 64-d latent centre + N(0,1) noise, fixed random 64->512 "
        "projection, ReLU, + 0.05 N(0,1); queries: 32 fresh samples of 4 classes",
        "search": rows,
        "insertion": inserts,
    }
    path = output.write("memory", results)
    print(f"results in {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
