"""``streamcl pretrain``: train a backbone on a dataset (or some of its classes) and save it.

    streamcl pretrain --dataset fashion-mnist --classes 5-9 --backbone vit --out vit.safetensors

The weights go to a safetensors file that learners load with ``backbone.weights``. Training is
``learners.backbones.pretrain``; this module only reads the command line and the dataset.
Training samples of fewer than two classes, and training that diverges, are usage errors
(exit 2, nothing written); the test accuracy counts only the test samples of the classes
the training samples hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from pydantic import ValidationError

from learners.backbones.backbone import BackboneConfig
from learners.backbones.pretrain import (
    PretrainConfig,
    PretrainDiverged,
    pretrain,
    save_backbone,
)
from learners.registry import describe_validation_error
from stream.cli.config_file import load_config_file
from stream.cli.errors import UsageError
from stream.cli.output_path import writable_file
from stream.data.datasets import Dataset, as_float_tensor, load_dataset
from stream.engine.device import resolve_device


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "pretrain",
        help="train a backbone on a dataset and save its weights (safetensors)",
        description="Train a backbone with a temporary linear head on a dataset, or on some of "
        "its classes (e.g. a first session), and save the backbone for backbone.weights.",
    )
    parser.add_argument(
        "--dataset", required=True, help="digits, fashion-mnist[:DIR], npz:PATH, ..."
    )
    parser.add_argument(
        "--backbone",
        required=True,
        choices=get_args(BackboneConfig.model_fields["name"].annotation),
    )
    parser.add_argument("--config", help='backbone options (JSON or TOML), e.g. {"vit": {...}}')
    parser.add_argument(
        "--classes", help="class ids to train on, e.g. 0-4 or 0,2,5-7 (default all)"
    )
    parser.add_argument("--max-samples", type=int, help="train on at most N samples (seeded draw)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training data")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per training step")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the training and of the --max-samples draw"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--out", required=True, help="output weights file (.safetensors)")
    parser.set_defaults(run=run)


def parse_classes(spec: str, num_classes: int) -> list[int]:
    """``"0-4"``, ``"0,2,5-7"`` -> sorted class ids, each checked against ``num_classes``."""
    chosen: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last if dash else first)
        except ValueError:
            raise UsageError(
                f"--classes: {part.strip()!r} is not a class id or range a-b"
            ) from None
        if lo > hi or lo < 0 or hi >= num_classes:
            raise UsageError(
                f"--classes: {part.strip()!r} is outside the dataset's classes 0-{num_classes - 1}"
            )
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)


def select(
    dataset: Dataset, classes: list[int] | None, max_samples: int | None, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train and test tensors of ``classes`` (all by default), train capped at ``max_samples``."""
    train = np.isin(dataset.y_train, classes) if classes else np.ones(len(dataset.y_train), bool)
    test = np.isin(dataset.y_test, classes) if classes else np.ones(len(dataset.y_test), bool)
    rows = np.flatnonzero(train)
    if max_samples is not None and max_samples < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    return (
        (as_float_tensor(dataset.X_train[rows]), torch.from_numpy(dataset.y_train[rows])),
        (as_float_tensor(dataset.X_test[test]), torch.from_numpy(dataset.y_test[test])),
    )


def _configs(args: argparse.Namespace) -> tuple[BackboneConfig, PretrainConfig]:
    options: dict[str, Any] = load_config_file(args.config) if args.config else {}
    try:
        backbone = BackboneConfig.model_validate({**options, "name": args.backbone})
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "backbone config")) from None
    try:
        training = PretrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "pretrain options")) from None
    return backbone, training


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: pretrained weights are written as .safetensors")
    writable_file(out)
    if args.max_samples is not None and args.max_samples <= 0:
        raise UsageError("--max-samples must be positive")
    backbone_config, training = _configs(args)
    dataset = load_dataset(args.dataset)
    classes = parse_classes(args.classes, dataset.num_classes) if args.classes else None
    train, test = select(dataset, classes, args.max_samples, args.seed)
    if len(train[1]) == 0:
        raise UsageError(f"--classes {args.classes}: no training samples in {args.dataset}")
    trained = torch.unique(train[1]).tolist()
    if len(trained) < 2:
        raise UsageError(
            f"the training samples hold only class {trained[0]}; pretraining needs at least 2 "
            "classes (widen --classes or raise --max-samples)"
        )
    device = resolve_device(args.device)
    print(
        f"pretraining {args.backbone} on {len(train[1])} samples of {args.dataset} "
        f"(classes {classes if classes else 'all'}), {training.epochs} epochs on {device}"
    )
    try:
        result = pretrain(
            backbone_config,
            *train,
            training,
            device,
            test=test if len(test[1]) else None,
            on_epoch=lambda epoch, loss: print(f"epoch {epoch + 1}: loss {loss:.4f}", flush=True),
        )
    except PretrainDiverged as exc:
        raise UsageError(
            f"training diverged ({exc.what} at epoch {exc.epoch}); lower --lr"
        ) from None
    summary = {**result.summary(), "dataset": args.dataset, "training": training.model_dump()}
    save_backbone(result.backbone, backbone_config, out, summary)
    test_text = (
        ""
        if result.test_accuracy is None
        else f", test accuracy {result.test_accuracy:.3f} "
        f"(on the {result.test_samples} test samples of the trained classes)"
    )
    print(
        f"train accuracy {result.train_accuracy:.3f}{test_text} in {result.seconds:.0f} s; "
        f"weights in {out} (use backbone.weights = {str(out)!r})"
    )
    return 0
