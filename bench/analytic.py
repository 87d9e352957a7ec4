"""The analytic heads on the path users run, and the heads alone.

The path users run predicts every micro-batch before learning it (prequential accuracy, and
the daemon), so this benchmark times G-ACIL with the default solver (``auto``) against the
recursive form of the official code (``solver="woodbury"``) at the same width, as paired ratios
(back-to-back runs, medians; on a shared machine load falls on both alike):

- ``replay``: :func:`stream.runs.recorded_run.replay`, what ``streamcl replay`` runs, on the
  synthetic 384-d, 87-class Si-Blurry stream of :mod:`bench._analytic_data` (batch 16,
  evaluation every 1000 samples), about 3,000 samples at widths 1024 (the CPU default) and 2048,
  522 at width 8192 (the GPU default);
- ``daemon``: :class:`stream.daemon.serve.Daemon` consuming the same samples from a tansu broker
  on loopback (binary messages of 16 samples, at most 8 per poll, micro-batches of 16, no
  test-set evaluation), timed from the end of the first poll that brought samples to the last;
- ``head``: the ridge heads alone (no engine), as before: the same stream (random order over
  synthetic 100-class, 512-d features) and random ReLU buffer (2048, float64) through every
  head in lockstep, predicting a 2000-sample evaluation set every 1000 samples (batches of
  256) and, in a second run, every batch of 16 before learning it. ``woodbury-official``
  evaluates the official ``RecursiveLinear.fit`` product ``R @ X.T @ K @ X @ R`` left to right
  (two d×d products per batch, O(d³)). Predictions must be identical across heads. In the
  every-batch run, ``woodbury+statistics`` is the bound of any head that keeps the statistics
  (exact, mergeable): the recursive form plus nothing but G and Q's upkeep, the Gram update
  deferred to 256-row blocks as ``auto`` does it; ``auto`` cannot beat ``woodbury`` by more
  than this head trails it (docs/analytic.md).

``python -m bench analytic [--paths replay daemon head] [--widths 2048 8192] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._analytic_data import stream
from bench.output import write
from learners.analytic import RandomBuffer
from learners.linalg.ridge import RecursiveRidge, one_hot
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import replay

GAMMA = 0.1


class OfficialRecursiveLinear:
    """ACIL eqs. 9-10 with the products in the order the official ``RecursiveLinear.fit`` writes."""

    def __init__(self, dim: int, classes: int, gamma: float) -> None:
        self.R = torch.eye(dim, dtype=torch.float64) / gamma
        self.W = torch.zeros(dim, classes, dtype=torch.float64)
        self.counts = torch.zeros(classes, dtype=torch.float64)

    def fit_labels(self, X: torch.Tensor, labels: torch.Tensor) -> None:
        Y = one_hot(labels, self.W.shape[1])
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        K = torch.inverse(torch.eye(X.shape[0], dtype=torch.float64) + X @ self.R @ X.T)
        self.R -= self.R @ X.T @ K @ X @ self.R
        self.W += self.R @ X.T @ (Y - X @ self.W)

    def weights(self) -> torch.Tensor:
        return self.W


class WoodburyKeepingStatistics:
    """``solver="woodbury"`` plus the statistics ``auto`` keeps, updated as ``auto`` updates
    them (a ``lazy`` head that is fitted but never solved: G's lower triangle in blocks of 256
    rows, Q, the counts), and nothing else: the least an exact, mergeable head can do per batch
    while predicting from the recursive form."""

    def __init__(self, dim: int, classes: int, gamma: float) -> None:
        self.head = RecursiveRidge(dim, classes, gamma, "woodbury")
        self.statistics = RecursiveRidge(dim, classes, gamma, "lazy")

    @property
    def counts(self) -> torch.Tensor:
        return self.head.counts

    def fit_labels(self, X: torch.Tensor, labels: torch.Tensor) -> None:
        self.head.fit_labels(X, labels)
        self.statistics.fit_labels(X, labels)

    def weights(self) -> torch.Tensor:
        return self.head.weights()


HEADS: dict[str, Callable[[int, int], Any]] = {
    "lazy": lambda dim, classes: RecursiveRidge(dim, classes, GAMMA, "lazy"),
    "auto": lambda dim, classes: RecursiveRidge(dim, classes, GAMMA, "auto"),
    "woodbury": lambda dim, classes: RecursiveRidge(dim, classes, GAMMA, "woodbury"),
    "woodbury-official": lambda dim, classes: OfficialRecursiveLinear(dim, classes, GAMMA),
    "woodbury+statistics": lambda dim, classes: WoodburyKeepingStatistics(dim, classes, GAMMA),
}


def make_data(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.d_in, generator=generator)
    y = torch.randint(0, args.classes, (args.samples,), generator=generator)
    x = centres[y] + 2.0 * torch.randn(args.samples, args.d_in, generator=generator)
    y_eval = torch.arange(args.eval_size) % args.classes
    x_eval = centres[y_eval] + 2.0 * torch.randn(args.eval_size, args.d_in, generator=generator)
    return x, y, x_eval, y_eval


def run(
    heads: dict[str, Any],
    buffer: RandomBuffer,
    data: tuple[torch.Tensor, ...],
    batch: int,
    eval_every: int | None,
    samples: int,
) -> dict[str, dict[str, Any]]:
    """Stream ``samples`` through every head in lockstep, batch by batch, so that load on the
    machine falls on all of them alike; predict the evaluation set every ``eval_every`` samples,
    or (``eval_every=None``) predict every batch before learning it.

    Buffer features are computed once per batch and shared: their time is reported apart.
    """
    x, y, x_eval, _ = data
    predictions: dict[str, list[torch.Tensor]] = {name: [] for name in heads}
    head_seconds = dict.fromkeys(heads, 0.0)
    feature_seconds = 0.0
    next_eval = eval_every or 0
    for start in range(0, samples, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        began = time.perf_counter()
        H = buffer(xb)
        evaluate = eval_every is not None and start + len(yb) >= next_eval
        H_eval = buffer(x_eval) if evaluate else None
        feature_seconds += time.perf_counter() - began
        for name, head in heads.items():
            began = time.perf_counter()
            if eval_every is None and start > 0:
                predictions[name].append(_masked_argmax(H @ head.weights(), head.counts))
            head.fit_labels(H, yb)
            if H_eval is not None:
                predictions[name].append(_masked_argmax(H_eval @ head.weights(), head.counts))
            head_seconds[name] += time.perf_counter() - began
        if evaluate:
            next_eval += eval_every or 0
    return {
        name: {
            "head_seconds": head_seconds[name],
            "feature_seconds": feature_seconds,
            "predictions": torch.cat(predictions[name]),
            "weights": head.weights().clone(),
            "samples": samples,
        }
        for name, head in heads.items()
    }


def _masked_argmax(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(counts == 0, float("-inf")).argmax(1)


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = runs["lazy"]
    table = {}
    for name, result in runs.items():
        total = result["head_seconds"] + result["feature_seconds"]
        difference = (result["weights"] - base["weights"]).norm() / base["weights"].norm()
        table[name] = {
            "head_seconds": round(result["head_seconds"], 3),
            "feature_seconds": round(result["feature_seconds"], 3),
            "head_samples_per_second": round(result["samples"] / result["head_seconds"], 1),
            "samples_per_second": round(result["samples"] / total, 1),
            "lazy_speedup_head": round(result["head_seconds"] / base["head_seconds"], 2),
            "lazy_speedup": round(total / (base["head_seconds"] + base["feature_seconds"]), 2),
            "predictions_identical_to_lazy": float(
                (result["predictions"] == base["predictions"]).double().mean()
            ),
            "predictions_compared": len(base["predictions"]),
            "weights_relative_difference_to_lazy": float(difference),
        }
    return table


def print_table(title: str, table: dict[str, dict[str, Any]]) -> None:
    print(title)
    print(
        f"  {'head':<20} {'head s':>7} {'head smp/s':>10} {'lazy ×':>7} "
        f"{'with features smp/s':>19} {'lazy ×':>7} {'same pred.':>10} {'ΔW/W':>8}"
    )
    for name, row in table.items():
        print(
            f"  {name:<20} {row['head_seconds']:>7.2f} {row['head_samples_per_second']:>10.0f} "
            f"{row['lazy_speedup_head']:>7.2f} {row['samples_per_second']:>19.0f} "
            f"{row['lazy_speedup']:>7.2f} {row['predictions_identical_to_lazy']:>10.2%} "
            f"{row['weights_relative_difference_to_lazy']:>8.1e}"
        )


def replay_path(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """``streamcl replay``'s path on the synthetic 384-d, 87-class Si-Blurry stream: the default
    solver against ``solver="woodbury"`` at each width, in back-to-back pairs."""
    rows = []
    for width, train in zip(args.widths, args.train_per_class, strict=True):
        prepared = stream("synthetic", work, train)
        seconds: dict[str, list[float]] = {solver: [] for solver in SOLVERS}
        accuracy: dict[str, float] = {}
        for _ in range(args.repeats):
            for solver in SOLVERS:
                options = {"buffer_size": width, "solver": solver}
                loop = LoopConfig(batch_size=args.batch, eval_period=1000)
                result = replay(prepared, "acil", options, loop, device="cpu")
                seconds[solver].append(result["seconds"])
                accuracy[solver] = result["prequential_accuracy"]
        rows.append(_paired("replay", width, result["samples"], seconds, accuracy))
    return rows


def daemon_path(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The daemon consuming the same stream from Kafka (binary messages of ``--batch``
    samples, a tansu broker on loopback), micro-batches of ``--batch``, every batch predicted."""
    from bench.daemon import Tansu
    from stream.daemon.config import ServeConfig
    from stream.daemon.serve import Daemon
    from stream.sinks.kafka_sink import open_sink
    from stream.sources.wire import encode_binary

    broker = Tansu()
    rows = []
    try:
        for width, train in zip(args.widths, args.train_per_class, strict=True):
            prepared = stream("synthetic", work, train)
            x, y = prepared.dataset.X_train, prepared.dataset.y_train
            topic = f"synthetic-{width}"
            sink = open_sink("confluent", broker.bootstrap, {})
            sink.ensure_topic(topic)
            for start in range(0, len(y), args.batch):
                batch = slice(start, start + args.batch)
                sink.send(topic, encode_binary(x[batch], y[batch], ids=np.arange(len(y))[batch]))
            sink.flush(60)
            sink.close()
            messages = -(-len(y) // args.batch)
            seconds: dict[str, list[float]] = {solver: [] for solver in SOLVERS}
            accuracy: dict[str, float] = {}
            for repeat in range(args.repeats):
                for solver in SOLVERS:
                    group = f"{topic}-{solver}-{repeat}"
                    config = ServeConfig.model_validate({
                        "kafka": {"bootstrap": broker.bootstrap, "topic": topic, "group": group,
                                  "poll_timeout_seconds": 0.05, "max_poll_records": 8},
                        "problem": {"input_shape": [x.shape[1]], "num_classes": [int(y.max()) + 1]},
                        "learner": {"name": "acil", "options": {"buffer_size": width, "solver": solver}},
                        "loop": {"batch_size": args.batch, "eval_period": None},
                        "checkpoint": {"dir": str(work / group), "every_samples": 10**9,
                                       "every_seconds": 10**6},
                        "dead_letter": {"file": str(work / f"{group}.dead.jsonl")},
                        "metrics": {"port": None},
                    })  # fmt: skip
                    daemon = Daemon(config)
                    daemon.connect()
                    while daemon.loop.samples_seen == 0:
                        daemon.step()  # the first poll waits for the partition assignment
                    began, first = time.perf_counter(), daemon.loop.samples_seen
                    while daemon.messages < messages:
                        daemon.step()
                    seconds[solver].append(time.perf_counter() - began)
                    accuracy[solver] = daemon.loop.prequential.cumulative
                    learned = daemon.loop.samples_seen - first
                    daemon.close()
            rows.append(_paired("daemon", width, learned, seconds, accuracy))
    finally:
        broker.stop()
    return rows


SOLVERS = ("woodbury", "auto")


def _paired(
    path: str,
    width: int,
    samples: int,
    seconds: dict[str, list[float]],
    accuracy: dict[str, float],
) -> dict[str, Any]:
    ratios = [w / a for w, a in zip(seconds["woodbury"], seconds["auto"], strict=True)]
    return {
        "path": path,
        "width": width,
        "samples": samples,
        "woodbury_samples_per_second": round(samples / statistics.median(seconds["woodbury"]), 1),
        "auto_samples_per_second": round(samples / statistics.median(seconds["auto"]), 1),
        "auto_over_woodbury": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "prequential_accuracy": {k: round(v, 6) for k, v in accuracy.items()},
    }


def print_paths(rows: list[dict[str, Any]]) -> None:
    print(
        f"  {'path':<7} {'width':>5} {'samples':>7} {'woodbury smp/s':>14} {'auto smp/s':>10} "
        f"{'auto/woodbury':>13}  pairs"
    )
    for row in rows:
        print(
            f"  {row['path']:<7} {row['width']:>5} {row['samples']:>7} "
            f"{row['woodbury_samples_per_second']:>14,.0f} {row['auto_samples_per_second']:>10,.0f} "
            f"{row['auto_over_woodbury']:>13.2f}  {row['ratios']}"
        )


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench analytic", description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 8192])
    parser.add_argument(
        "--train-per-class", type=int, nargs="+", default=[35, 35, 6],
        help="training samples per class of the stream at each width (87 classes)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="back-to-back pairs per path")
    parser.add_argument("--paths", nargs="+", default=["replay", "daemon", "head"])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--prequential-samples", type=int, default=2_048)
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--head-batch", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if len(args.train_per_class) != len(args.widths):
        parser.error(
            f"--train-per-class needs one value per width: {len(args.widths)} widths, "
            f"{len(args.train_per_class)} values"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    results: dict[str, Any] = {"setup": {**vars(args), "threads": torch.get_num_threads()}}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        paths = []
        if "replay" in args.paths:
            paths += replay_path(args, work)
        if "daemon" in args.paths:
            paths += daemon_path(args, work)
        if paths:
            results["paths"] = paths
            print(
                f"acil, synthetic 384-d 87-class Si-Blurry stream, batch {args.batch}, every "
                f"batch predicted; default solver against woodbury at the same width "
                f"(medians of {args.repeats} back-to-back pairs)"
            )
            print_paths(paths)
    if "head" in args.paths:
        data = make_data(args)
        buffer = RandomBuffer(args.d_in, args.buffer, seed=1)
        heads = {
            name: make(args.buffer, args.classes)
            for name, make in HEADS.items()
            if name != "woodbury+statistics"
        }
        periodic = run(heads, buffer, data, args.head_batch, args.eval_every, args.samples)
        heads = {
            name: HEADS[name](args.buffer, args.classes)
            for name in ("lazy", "auto", "woodbury", "woodbury+statistics")
        }
        prequential = run(heads, buffer, data, args.batch, None, args.prequential_samples)
        results["head_only"] = {
            "periodic_evaluation": compare(periodic),
            "predict_every_batch": compare(prequential),
        }
        print_table(
            f"head only: {args.samples} samples, d_in={args.d_in}, buffer {args.buffer}, "
            f"B={args.head_batch}, {args.classes} classes, evaluation of {args.eval_size} every "
            f"{args.eval_every} samples",
            results["head_only"]["periodic_evaluation"],
        )
        print_table(
            f"head only: {args.prequential_samples} samples, B={args.batch}, every batch "
            "predicted before it is learned",
            results["head_only"]["predict_every_batch"],
        )
    path = write("analytic", results)
    print(f"written to {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
