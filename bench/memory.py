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

Embeddings (``--embeddings``):

- ``synthetic`` (default): shaped like CNN features: 100 classes, each a 64-d latent centre plus
  noise, through one fixed random 64→512 projection, a ReLU and a little isotropic noise
  (non-negative, low intrinsic dimension, clustered by class). The queries are a stream batch:
  fresh samples of 4 classes. Clusters this clean flatter an IVF index (recall 1.0 at nprobe 2).
- ``fashion-mnist`` / ``digits``: real features. A small MLP backbone (pixels → 512 → ``--dim``,
  ReLU, seeded) is trained for one epoch on the training images with a linear head, and its
  ``--dim``-d features of the training images are stored, each plus Gaussian noise of
  ``--noise`` (0.1) times the features' standard deviation (digits, 1797 images, are drawn with
  replacement up to ``--stored``: the noise makes the copies distinct). The queries are test-set
  features with their own noise: a stream batch of ``--queries`` for the timing, and
  ``--recall-queries`` (1000) for recall@k.

The ivf rows: the memory's default (``nprobe`` calibrated at training to recall@10 ≥ 0.95 on
its own vectors, memory/faiss_index.py) and a few fixed ``nprobe``, all on the same centroids.
The done-criterion of issue 17: ``--embeddings fashion-mnist --stored 60000 --dim 384`` reaches
held-out recall@10 ≥ 0.95 at ≥ 5× the speed of the brute-force search, with the default.
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
from stream.data.datasets import load_dataset


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


def backbone_features(
    dataset: str, dim: int, stored: int, queries: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy ``dim``-d features of ``stored`` training and ``queries`` test images of ``dataset``
    from a small MLP trained here for one epoch (no weights are downloaded)."""
    data = load_dataset(dataset)
    x_train = torch.as_tensor(data.X_train, dtype=torch.float32).flatten(1)
    x_test = torch.as_tensor(data.X_test, dtype=torch.float32).flatten(1)
    scale = x_train.max().clamp(min=1.0)
    x_train, x_test = x_train / scale, x_test / scale
    y_train = torch.as_tensor(data.y_train, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    backbone = torch.nn.Sequential(
        torch.nn.Linear(x_train.shape[1], 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, dim),
        torch.nn.ReLU(),
    )
    head = torch.nn.Linear(dim, int(y_train.max()) + 1)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=1e-3)
    for rows in torch.randperm(len(y_train), generator=generator).split(128):
        loss = torch.nn.functional.cross_entropy(head(backbone(x_train[rows])), y_train[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pick = torch.randperm(len(x_train), generator=generator)[:stored]
        if stored > len(x_train):  # digits: draw with replacement; the noise tells copies apart
            pick = torch.randint(0, len(x_train), (stored,), generator=generator)
        train = backbone(x_train[pick])
        test = backbone(x_test[torch.randint(0, len(x_test), (queries,), generator=generator)])
        sigma = noise * float(train.std())
        train += sigma * torch.randn(train.shape, generator=generator)
        test += sigma * torch.randn(test.shape, generator=generator)
    return train.contiguous(), test.contiguous()


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
    args: argparse.Namespace,
    stored: torch.Tensor,
    queries: torch.Tensor,
    recall_queries: torch.Tensor,
) -> list[dict]:
    norms = (stored * stored).sum(1)

    def brute_force(batch: torch.Tensor = queries) -> torch.Tensor:
        distances = norms - 2 * batch @ stored.T
        return distances.topk(args.k, dim=1, largest=False).indices

    truth = brute_force(recall_queries)
    baseline = median_seconds(brute_force, args.repeats)
    rows = [{"method": "torch brute force", "seconds": baseline, "speedup": 1.0, "recall": 1.0}]
    indexes = [("faiss flat (exact)", EmbeddingIndex(len(stored), stored.shape[1], "flat"))]
    calibrated = EmbeddingIndex(len(stored), stored.shape[1], "ivf")
    indexes.append(("faiss ivf default", calibrated))
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
        found = index.search(recall_queries, args.k)[1]
        row = {
            "method": name,
            "seconds": seconds,
            "speedup": baseline / seconds,
            "recall": recall(found, truth),
            "build_seconds": build,
        }
        if index is calibrated and index.calibration is not None:
            row["method"] = f"faiss ivf default (nprobe={index.calibration.nprobe})"
            row["calibrated_nprobe"] = index.calibration.nprobe
            row["calibration_recall"] = index.calibration.recall
        rows.append(row)
    return rows


def identity(x: torch.Tensor) -> torch.Tensor:
    """The embeddings are the inputs: insertion figures are the memory's cost, not a backbone's."""
    return x


def insertion(args: argparse.Namespace, features: FeatureGenerator) -> dict[str, Any]:
    config = MemoryConfig(
        capacity=args.stored,
        policy="class_balanced",
        retrieval="nearest",
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
    parser.add_argument(
        "--embeddings", default="synthetic", help="synthetic, fashion-mnist, digits (see above)"
    )
    parser.add_argument("--noise", type=float, default=0.1, help="real embeddings: noise / std")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--no-insertion", action="store_true", help="search figures only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    features = FeatureGenerator(args.dim, seed=args.seed)
    if args.embeddings == "synthetic":
        stored, _ = features(args.stored)
        queries, _ = features(args.queries, classes=[3, 17, 42, 77])
        recall_queries = queries
        described = (
            "100 classes: 64-d latent centre + N(0,1) noise, fixed random 64->512 projection, "
            "ReLU, + 0.05 N(0,1); queries: 32 fresh samples of 4 classes"
        )
    else:
        stored, held_out = backbone_features(
            args.embeddings,
            args.dim,
            args.stored,
            args.queries + args.recall_queries,
            args.noise,
            args.seed,
        )
        queries, recall_queries = held_out[: args.queries], held_out[args.queries :]
        described = (
            f"{args.embeddings}: features of a 1-epoch MLP (pixels->512->{args.dim}, ReLU) + "
            f"{args.noise} std Gaussian noise; queries: test-image features"
        )
    rows = search_table(args, stored, queries, recall_queries)
    print(
        f"{args.queries} queries, k={args.k}, over {args.stored} stored {args.dim}-d "
        f"{args.embeddings} embeddings ({args.threads} thread(s); ivf lists "
        f"{ivf_lists(args.stored)}; recall on {len(recall_queries)} held-out queries)"
    )
    recall_label = f"recall@{args.k}"
    print(f"{'method':<24} {'ms/batch':>9} {'speedup':>8} {recall_label:>10} {'build s':>8}")
    for row in rows:
        build = f"{row['build_seconds']:.2f}" if "build_seconds" in row else ""
        print(
            f"{row['method']:<24} {1000 * row['seconds']:>9.2f} {row['speedup']:>8.1f} "
            f"{row['recall']:>10.3f} {build:>8}"
        )
    inserts = None if args.no_insertion else insertion(args, features)
    if inserts is not None:
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
        "embeddings": described,
        "search": rows,
        "insertion": inserts,
    }
    topic = "memory" if args.embeddings == "synthetic" else f"memory-{args.embeddings}"
    path = output.write(topic, results)
    print(f"results in {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
