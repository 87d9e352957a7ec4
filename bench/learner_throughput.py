"""Throughput on CPU of the registered learners: samples per second through predict + learn.

Each learner sees the same synthetic 28x28 one-channel stream (Fashion-MNIST sized), in
16-sample micro-batches with one update step each (``online_iter`` 1), after a warm-up, in
interleaved rounds (median per learner); the prequential ``predict`` is timed with ``learn``
since the engine calls both per batch. Each learner uses the backbone its benchmark uses: the
MLP of ``uer_vs_er`` with a 200-sample memory for the replay learners (er, uer, pl-fms), the
frozen tiny ViT of ``mvp_pretrained`` for mvp and the frozen-backbone learners (nmc, slda, acil,
aef-ocl, ds-al; otherwise their default options). Absolute numbers depend on that choice; the
ratio column is against ``er`` measured in the same run.

    python -m bench learner_throughput
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import output
from bench.mvp_pretrained import VIT
from learners import registry
from learners.backbones.backbone import BackboneConfig, build_backbone
from learners.backbones.pretrain import save_backbone
from learners.base import Learner, Problem

MLP = {"name": "mlp", "hidden": [256], "out_dim": 128}
FROZEN_VIT = {"name": "vit", "vit": VIT, "freeze": True}
OPTIONS: dict[str, dict[str, Any]] = {
    "er": {"backbone": MLP, "memory": {"capacity": 200}},
    "uer": {"backbone": MLP, "memory": {"capacity": 200}},
    "pl-fms": {"backbone": MLP, "memory": {"capacity": 200}},
    "mvp": {"backbone": FROZEN_VIT},
    # the frozen-backbone learners, on the same frozen ViT
    **{name: {"backbone": FROZEN_VIT} for name in ("nmc", "slda", "acil", "aef-ocl", "ds-al")},
}
BACKBONE_NAMES = {
    name: "mlp" if "memory" in options else "vit (frozen)" for name, options in OPTIONS.items()
}


def build(name: str, weights: Path) -> Learner:
    problem = Problem(input_shape=(1, 28, 28), num_classes=(10,))
    options = OPTIONS[name]
    if options["backbone"] is FROZEN_VIT:
        options = {**options, "backbone": {**FROZEN_VIT, "weights": str(weights)}}
    return registry.create(name, problem, options, "cpu")


def seeded_vit_weights(path: Path) -> Path:
    """The frozen ViT's own seeded initialisation as a weights file: speed does not depend on
    the weights, and mvp refuses a frozen ViT without a file."""
    config = BackboneConfig.model_validate({**FROZEN_VIT, "freeze": False})
    return save_backbone(build_backbone(config, (1, 28, 28), seed=0), config, path)


def timed_chunk(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds to predict then learn each batch of ``x`` (``[batches, B, ...]``)."""
    level = torch.zeros(x.shape[1], dtype=torch.long)
    started = time.perf_counter()
    for xb, yb in zip(x, y, strict=True):
        learner.predict(xb)
        learner.learn(xb, yb, level, 1)
    return time.perf_counter() - started


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench learner_throughput")
    parser.add_argument("--batches", type=int, default=10, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the two cores are shared)"
    )
    args = parser.parse_args(argv)
    # Two intra-op threads on two shared, loaded cores ran a ViT step 6x slower than one.
    torch.set_num_threads(args.threads)
    registered = [n for n in registry.names() if ":<" not in n]
    names = [n for n in registered if n in OPTIONS]
    uncovered = [n for n in registered if n not in OPTIONS]
    with tempfile.TemporaryDirectory() as tmp:
        weights = seeded_vit_weights(Path(tmp) / "vit.safetensors")
        learners = {name: build(name, weights) for name in names}
    generator = torch.Generator().manual_seed(0)
    shape = (args.batches, args.batch_size)
    x = torch.rand(*shape, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, shape, generator=generator)
    for learner in learners.values():
        timed_chunk(learner, x[: args.warmup], y[: args.warmup])
    # Rounds interleave the learners so that load from other processes hits all of them alike;
    # each learner's rate is its median over the rounds.
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, learner in learners.items():
            seconds[name].append(timed_chunk(learner, x, y))
    rates = {
        name: args.batches * args.batch_size / statistics.median(s) for name, s in seconds.items()
    }
    baseline = rates.get("er") or next(iter(rates.values()))
    lines = ["| learner | backbone | samples/s | vs er |", "|---|---|---|---|"]
    for name, rate in rates.items():
        backbone = BACKBONE_NAMES[name]
        lines.append(f"| {name} | {backbone} | {rate:,.0f} | {rate / baseline:.2f} |")
    print(f"CPU, {torch.get_num_threads()} threads, predict + learn, batch {args.batch_size}")
    print("\n".join(lines))
    if uncovered:
        print(f"not measured (no benchmark options here yet): {', '.join(uncovered)}")
    record = {
        "batch_size": args.batch_size,
        "batches_per_round": args.batches,
        "rounds": args.rounds,
        "options": OPTIONS,
        "samples_per_second": rates,
        "ratio_vs_er": {name: rate / baseline for name, rate in rates.items()},
    }
    output.write("learner_throughput", record)
    return record
