"""Lazy sufficient statistics vs the recursive Woodbury form of the analytic ridge head.

The same stream (random order over synthetic 100-class, 512-d features), the same random ReLU
buffer (2048, float64) and batches of 256 go through three ridge heads; every 1000 samples the
head predicts a 2000-sample evaluation set, as the event loop's anytime evaluation does:

- ``lazy``: :class:`learners.analytic.RecursiveRidge` keeping HᵀH, HᵀY (the default solver);
- ``woodbury``: the same class with ``solver="woodbury"``: R = (HᵀH+γI)⁻¹ and W updated per
  batch, associated as (R Hᵀ)(K⁻¹ H R), O(B·d²);
- ``woodbury-official``: the update as the official ``RecursiveLinear.fit`` writes it,
  ``R -= R @ X.T @ K @ X @ R`` with ``K = inverse(I + X R Xᵀ)``, which evaluated left to right
  multiplies two d×d matrices per batch.

A second run predicts every batch before learning it (the event loop's prequential pattern),
where the lazy head keeps its factorisation current with appended rows instead of solving.
The heads run in lockstep on the same batches (so load on a shared machine falls on all alike);
throughput is samples/s of the head alone (learning and predicting) and with the shared buffer
projection added. Predictions must be identical across heads.

``python -m bench analytic`` (``--samples N`` etc. to change the sizes).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.output import write
from learners.analytic import RandomBuffer
from learners.linalg.ridge import RecursiveRidge, one_hot

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


HEADS: dict[str, Callable[[int, int], Any]] = {
    "lazy": lambda dim, classes: RecursiveRidge(dim, classes, GAMMA, "lazy"),
    "woodbury": lambda dim, classes: RecursiveRidge(dim, classes, GAMMA, "woodbury"),
    "woodbury-official": lambda dim, classes: OfficialRecursiveLinear(dim, classes, GAMMA),
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
        f"  {'head':<18} {'head s':>7} {'head smp/s':>10} {'lazy ×':>7} "
        f"{'with features smp/s':>19} {'lazy ×':>7} {'same pred.':>10} {'ΔW/W':>8}"
    )
    for name, row in table.items():
        print(
            f"  {name:<18} {row['head_seconds']:>7.2f} {row['head_samples_per_second']:>10.0f} "
            f"{row['lazy_speedup_head']:>7.2f} {row['samples_per_second']:>19.0f} "
            f"{row['lazy_speedup']:>7.2f} {row['predictions_identical_to_lazy']:>10.2%} "
            f"{row['weights_relative_difference_to_lazy']:>8.1e}"
        )


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench analytic", description=__doc__)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--prequential-samples", type=int, default=2_048)
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-size", type=int, default=2000)
    args = parser.parse_args(argv)

    data = make_data(args)
    buffer = RandomBuffer(args.d_in, args.buffer, seed=1)
    heads = {name: make(args.buffer, args.classes) for name, make in HEADS.items()}
    periodic = run(heads, buffer, data, args.batch, args.eval_every, args.samples)
    heads = {name: HEADS[name](args.buffer, args.classes) for name in ("lazy", "woodbury")}
    prequential = run(heads, buffer, data, args.batch, None, args.prequential_samples)
    results: dict[str, Any] = {
        "setup": {
            **vars(args),
            "gamma": GAMMA,
            "dtype": "float64",
            "stream": "random order, synthetic Gaussian classes",
        },
        "periodic_evaluation": compare(periodic),
        "predict_every_batch": compare(prequential),
    }
    print_table(
        f"{args.samples} samples, d_in={args.d_in}, buffer {args.buffer}, B={args.batch}, "
        f"{args.classes} classes, evaluation of {args.eval_size} every {args.eval_every} samples",
        results["periodic_evaluation"],
    )
    print_table(
        f"{args.prequential_samples} samples, every batch predicted before it is learned",
        results["predict_every_batch"],
    )
    path = write("analytic", results)
    print(f"written to {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
