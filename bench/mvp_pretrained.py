"""MVP on a tiny ViT pretrained with ``streamcl pretrain`` on other data, against a frozen-
backbone linear head on the same streams.

1. ``streamcl pretrain`` trains the ViT on Fashion-MNIST classes 5-9 (sandal, shirt, sneaker,
   bag, ankle boot), on training images that no stream below contains (written to an npz);
2. two Si-Blurry (T=5, N=50, M=10) streams over class-balanced subsamples:
   - ``unseen-5``: only classes 0-4 (T-shirt, trouser, pullover, dress, coat), relabelled 0-4,
     classes the ViT never saw; with 5 classes over 5 tasks most tasks hold one class;
   - ``all-10``: all ten classes (five of them unseen by the ViT);
3. on each stream, with the same frozen ViT: ``mvp`` (paper defaults: prompts, masks, CVPT, AFS,
   GSF, no memory), ``er`` with no memory (the linear-head baseline: a linear classifier on the
   frozen features trained online, seen-class masked) and ``nmc`` (class means).

    python -m bench mvp_pretrained
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import output
from bench._streams import si_blurry_stream, subsample
from stream.cli.main import main as streamcl
from stream.data.datasets import load_dataset
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import replay

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


def pretraining_data(spec: str, exclude_train: np.ndarray, path: Path) -> None:
    """Fashion-MNIST classes 5-9 minus the training rows the streams use, as an npz dataset.

    Its test split (all class 5-9 test images) only reports the pretraining accuracy.
    """
    full = load_dataset(spec)
    train = np.setdiff1d(np.flatnonzero(full.y_train >= 5), exclude_train)
    test = np.flatnonzero(full.y_test >= 5)
    np.savez(
        path,
        X_train=full.X_train[train][:, 0],
        y_train=full.y_train[train],
        X_test=full.X_test[test][:, 0],
        y_test=full.y_test[test],
    )


def pretrain(data: Path, out: Path, samples: int, epochs: int) -> None:
    config = out.with_suffix(".json")
    config.write_text(json.dumps({"vit": VIT}), encoding="utf-8")
    code = streamcl([
        "pretrain", "--dataset", f"npz:{data}", "--classes", "5-9", "--backbone", "vit",
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
    per_class = (args.train_per_class, args.test_per_class)
    unseen, unseen_rows = subsample(args.dataset, *per_class, [0, 1, 2, 3, 4])
    everything, all_rows = subsample(args.dataset, *per_class)
    streams = {"unseen-5": unseen, "all-10": everything}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in streams}
    with tempfile.TemporaryDirectory() as tmp:
        data, weights = Path(tmp) / "pretrain.npz", Path(tmp) / "vit.safetensors"
        pretraining_data(args.dataset, np.union1d(unseen_rows, all_rows), data)
        pretrain(data, weights, args.pretrain_samples, args.pretrain_epochs)
        for stream_name, dataset in streams.items():
            for seed in args.seeds:
                stream = si_blurry_stream(dataset, seed, tmp)
                for label, (name, options) in learners(weights).items():
                    result = replay(stream, name, {**options, "seed": seed}, loop, "cpu")
                    runs[stream_name].setdefault(label, []).append(
                        {key: result[key] for key in (*METRICS, "samples_per_second")}
                    )
                    print(
                        f"{stream_name} seed {seed} {label}: "
                        + ", ".join(f"{m} {100 * result[m]:.2f}" for m in METRICS)
                    )
    summary = {
        stream_name: {
            label: {m: statistics.mean(r[m] for r in rs) for m in (*METRICS, "samples_per_second")}
            for label, rs in by_learner.items()
        }
        for stream_name, by_learner in runs.items()
    }
    lines = [
        "| stream | learner (frozen pretrained ViT) | A_auc | A_last | F_last | samples/s |",
        "|---|---|---|---|---|---|",
    ]
    for stream_name, by_learner in summary.items():
        for label, s in by_learner.items():
            cells = " | ".join(f"{100 * s[m]:.2f}" for m in METRICS)
            lines.append(f"| {stream_name} | {label} | {cells} | {s['samples_per_second']:.0f} |")
    print(f"mean over seeds {args.seeds}")
    print("\n".join(lines))
    record = {
        "pretrain": {
            "data": f"{args.dataset} classes 5-9, rows not in any stream",
            "samples": args.pretrain_samples, "epochs": args.pretrain_epochs, "vit": VIT,
        },
        "streams": {name: ds.spec for name, ds in streams.items()},
        "schedule": "si-blurry T=5 N=50 M=10",
        "loop": loop.model_dump(),
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
    }  # fmt: skip
    output.write("mvp_pretrained", record)
    return record
