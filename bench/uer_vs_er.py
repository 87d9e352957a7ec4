"""UER against ER on Si-Blurry Fashion-MNIST: same backbone, memory, stream and seed for both.

Per seed (1, 2, 3): one Si-Blurry stream (T=5, N=50, M=10) over a class-balanced subsample of
Fashion-MNIST (``--train-per-class`` images per class, default 500; the full set takes too long
on two cores), both learners with the same MLP backbone (256 → 128; a CNN is ~7x slower
here), reservoir memory of 200 and learner seed, 16-sample micro-batches, three update steps per
batch. Reports A_auc / A_last / F_last per seed
and their mean. Falls back to scikit-learn's digits where Fashion-MNIST is not installed.

    python -m bench uer_vs_er
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import torch

from bench import output
from bench._streams import si_blurry_stream, subsample
from stream.data.datasets import DatasetError
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import replay

LEARNERS = ("er", "uer")
METRICS = ("A_auc", "A_last", "F_last")


def options(memory: int, seed: int) -> dict[str, Any]:
    return {
        "backbone": {"name": "mlp", "hidden": [256], "out_dim": 128},
        "memory": {"capacity": memory},
        "lr": 1e-3,
        "seed": seed,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench uer_vs_er")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--memory", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the two cores are shared)"
    )
    args = parser.parse_args(argv)
    # Two intra-op threads on two shared, loaded cores ran a ViT step 6x slower than one.
    torch.set_num_threads(args.threads)
    try:
        dataset, _ = subsample(args.dataset, args.train_per_class, args.test_per_class)
    except DatasetError as exc:
        print(f"{exc}; using digits instead")
        dataset, _ = subsample("digits", 10_000, 10_000)
    loop = LoopConfig(batch_size=16, online_iter=3.0, eval_period=500)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in LEARNERS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            stream = si_blurry_stream(dataset, seed, tmp)
            for name in LEARNERS:
                result = replay(stream, name, options(args.memory, seed), loop, "cpu")
                runs[name].append({key: result[key] for key in (*METRICS, "samples_per_second")})
                print(
                    f"seed {seed} {name}: "
                    + ", ".join(f"{m} {100 * result[m]:.2f}" for m in METRICS)
                )
    summary = {
        name: {
            m: {
                "mean": statistics.mean(r[m] for r in rs),
                "std": statistics.stdev(r[m] for r in rs) if len(rs) > 1 else 0.0,
            }
            for m in METRICS
        }
        for name, rs in runs.items()
    }
    print(table(runs, summary, args.seeds))
    record = {
        "dataset": dataset.spec,
        "schedule": "si-blurry T=5 N=50 M=10",
        "memory": args.memory,
        "loop": loop.model_dump(),
        "options": options(args.memory, 0) | {"seed": "= stream seed"},
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
        "uer_forgets_less": summary["uer"]["F_last"]["mean"] < summary["er"]["F_last"]["mean"],
    }
    output.write("uer_vs_er", record)
    return record


def table(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any], seeds: list[int]) -> str:
    lines = ["| learner | seed | A_auc | A_last | F_last |", "|---|---|---|---|---|"]
    for name, rs in runs.items():
        for seed, r in zip(seeds, rs, strict=True):
            lines.append(
                f"| {name} | {seed} | " + " | ".join(f"{100 * r[m]:.2f}" for m in METRICS) + " |"
            )
    for name, s in summary.items():
        cells = " | ".join(f"{100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}" for m in METRICS)
        lines.append(f"| **{name}** | mean | {cells} |")
    return "\n".join(lines)
