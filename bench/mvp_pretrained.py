"""MVP on a tiny ViT pretrained with ``streamcl pretrain`` on other classes, against a frozen-
backbone linear head on the same stream.

1. ``streamcl pretrain`` trains the ViT on Fashion-MNIST classes 5-9 (sandal, shirt, sneaker,
   bag, ankle boot) — classes the stream never shows;
2. the stream is Si-Blurry (T=5, N=50, M=10) over a class-balanced subsample of classes 0-4
   (T-shirt, trouser, pullover, dress, coat), relabelled 0-4;
3. on that stream, with the same frozen ViT: ``mvp`` (paper defaults: prompts, masks, CVPT, AFS,
   GSF, no memory), ``er`` with no memory (the linear-head baseline: a linear classifier on the
   frozen features trained online, seen-class masked) and ``nmc`` (class means of the frozen
   features).

    python -m bench mvp_pretrained
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench import output
from bench._streams import si_blurry_stream, subsample
from stream.cli import main as streamcl
from stream.event_loop import LoopConfig
from stream.replay import replay

# 7x7 patches: 16 image tokens + [CLS] + 25 prompt tokens keep MVP at minutes on two cores.
VIT = {"patch_size": 7, "embed_dim": 48, "depth": 5, "num_heads": 4, "mlp_ratio": 2.0}
METRICS = ("A_auc", "A_last", "F_last")


def learners(weights: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    frozen = {"name": "vit", "vit": VIT, "weights": str(weights), "freeze": True}
    return {
        "mvp": ("mvp", {"backbone": frozen}),
        "linear head (er, no memory)": (
            "er",
            {"backbone": frozen, "memory": {"capacity": 0}, "lr": 5e-3},
        ),
        "nmc": ("nmc", {"backbone": frozen}),
    }


def pretrain(out: Path, samples: int, epochs: int, spec: str) -> None:
    config = out.with_suffix(".json")
    config.write_text(json.dumps({"vit": VIT}), encoding="utf-8")
    code = streamcl([
        "pretrain", "--dataset", spec, "--classes", "5-9", "--backbone", "vit",
        "--config", str(config), "--max-samples", str(samples), "--epochs", str(epochs),
        "--batch-size", "64", "--lr", "2e-3", "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    if code != 0:
        raise SystemExit(f"streamcl pretrain failed with exit code {code}")


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench mvp_pretrained")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--pretrain-samples", type=int, default=5000)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the two cores are shared)"
    )
    args = parser.parse_args(argv)
    # Two intra-op threads on two shared, loaded cores ran a ViT step 6x slower than one.
    torch.set_num_threads(args.threads)
    loop = LoopConfig(batch_size=16, online_iter=3.0, eval_period=250)
    dataset = subsample(args.dataset, args.train_per_class, args.test_per_class, [0, 1, 2, 3, 4])
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vit.safetensors"
        pretrain(weights, args.pretrain_samples, args.pretrain_epochs, args.dataset)
        for seed in args.seeds:
            stream = si_blurry_stream(dataset, seed, tmp)
            for label, (name, options) in learners(weights).items():
                result = replay(stream, name, {**options, "seed": seed}, loop, "cpu")
                runs.setdefault(label, []).append(
                    {key: result[key] for key in (*METRICS, "samples_per_second")}
                )
                print(
                    f"seed {seed} {label}: "
                    + ", ".join(f"{m} {100 * result[m]:.2f}" for m in METRICS)
                )
    summary = {
        label: {m: statistics.mean(r[m] for r in rs) for m in (*METRICS, "samples_per_second")}
        for label, rs in runs.items()
    }
    lines = [
        "| learner (frozen pretrained ViT) | A_auc | A_last | F_last | samples/s |",
        "|---|---|---|---|---|",
    ]
    for label, s in summary.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{100 * s[m]:.2f}" for m in METRICS)
            + f" | {s['samples_per_second']:.0f} |"
        )
    print(f"mean over seeds {args.seeds}, stream {dataset.spec}")
    print("\n".join(lines))
    record = {
        "pretrain": {
            "dataset": args.dataset, "classes": "5-9", "samples": args.pretrain_samples,
            "epochs": args.pretrain_epochs, "vit": VIT,
        },
        "stream": {"dataset": dataset.spec, "schedule": "si-blurry T=5 N=50 M=10"},
        "loop": loop.model_dump(),
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
    }  # fmt: skip
    output.write("mvp_pretrained", record)
    return record
