"""Learning quality on data no one tuned to (issue 17): writes docs/results/quality.md.

Four parts, each a table of mean ± std over seeds 1, 2, 3 and one plot per dataset:

``hle`` — ``er`` against ``pl-fms`` per hierarchy level on HLE streams (``stream/data/schedules/
hle.py``), scenarios ``single`` and ``dual`` (``multi-depth`` needs three levels; these have two):

- ``synthetic``: ``synthetic-hierarchy`` 10 coarse × 5 fine Gaussian clusters in 32-d,
  60 training / 20 test samples per fine class;
- ``fashion-mnist``: 200 training / 100 test images per class, coarse classes tops, bottoms
  and dresses, footwear, bags (``bench/hle.py``'s grouping);
- ``digits``: scikit-learn's 8×8 digits, all of them, coarse classes by stroke shape: loops
  (0, 6, 8, 9), straight strokes (1, 4, 7), open curves (2, 3, 5).

Settings as ``bench/hle.py``: batches of 16, three update steps per batch, memory 4% of the
stream, the MLP backbone (256 → 128), ``pl-fms`` given the stream length as ``N_total``.

``images`` — ``er``, ``uer`` (MLP backbone 256 → 128 trained online, memory 200; each with its
default Adam and with SGD at 0.05, the optimiser of UER's paper), ``mvp`` and
``nmc`` (both on the same frozen tiny ViT, pretrained here) on Si-Blurry (T=5, N=50, M=10)
streams of ``digits`` (100 training / 30 test images per class) and ``fashion-mnist`` (200 / 100).
The ViT is pretrained (``learners.backbones.pretrain``, the code behind ``streamcl pretrain``)
on classes 0–4 of training images that the stream does not contain.

``hle-why`` — where ``pl-fms`` lost to ``er`` (the coarse level of digits, ``dual``): ``er``
and ``pl-fms`` each with the other's memory policy, and ``pl-fms`` without PL.

``mvp`` — why MVP forgets: on the Fashion-MNIST stream of ``images``, MVP with one piece
changed at a time (GSF off, AFS off, logit masks off, a replay memory, a lower learning rate)
against ``nmc`` and a linear head on the same frozen features.

Accuracies, not speed, are measured: torch runs on one thread (the machine is shared).

    python -m bench quality                 # all four parts (about 40 minutes on 2 loaded cores)
    python -m bench.quality --part images   # one part; the page keeps the others' last figures
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
from learners.backbones.backbone import BackboneConfig
from learners.backbones.pretrain import PretrainConfig, pretrain, save_backbone
from stream.data.datasets import load_dataset
from stream.data.datasets.dataset import as_float_tensor
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import PreparedStream, prepare, replay

SEEDS = (1, 2, 3)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"
MLP = {"name": "mlp", "hidden": [256], "out_dim": 128}
LOOP = {"batch_size": 16, "online_iter": 3.0}

# -- hierarchies --------------------------------------------------------------------------------

SYNTHETIC = "synthetic-hierarchy:branching=10x5,separation=0.5,train=60,test=20"
FASHION_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])
FASHION_COARSE_NAMES = ("tops", "bottoms and dresses", "footwear", "bags")
DIGITS_COARSE = np.array([0, 1, 2, 2, 1, 2, 0, 1, 0, 0])
DIGITS_COARSE_NAMES = ("loops 0 6 8 9", "straight 1 4 7", "curves 2 3 5")
HLE_SCENARIOS = ("single", "dual")
HLE_LEARNERS = ("er", "pl-fms")
MEMORY_SHARE = 0.04
HLE_COLUMNS = (("coarse", "A_auc"), ("coarse", "A_last"), ("fine", "A_auc"), ("fine", "A_last"))


def hierarchy_npz(spec: str, coarse: np.ndarray, per_class: tuple[int, int], path: Path) -> str:
    """A two-level version of ``spec`` (coarse = ``coarse[fine]``), subsampled per class."""
    full = load_dataset(spec)
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, X, y, n in (
        ("train", full.X_train, full.y_train, per_class[0]),
        ("test", full.X_test, full.y_test, per_class[1]),
    ):
        rows = np.sort(
            np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in range(10)])
        )
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X[rows], y[rows]
        arrays[f"y_{split}_levels"] = np.stack([coarse[y[rows]], y[rows]], axis=1)
    np.savez(path, **arrays, level_names=np.array(["coarse", "fine"]))
    return f"npz:{path}"


def hle_stream(name: str, spec: str, scenario: str, seed: int, directory: Path) -> PreparedStream:
    dataset = load_dataset(spec)
    schedule, params = make_schedule("hle", dataset, {"scenario": scenario}, seed)
    recorded = record_schedule(dataset, schedule, "hle", params.model_dump(mode="json"), seed)
    path = directory / f"hle-{name}-{scenario}-{seed}.scl"
    return prepare(write_stream(path, recorded), dataset)


# Where pl-fms lost (coarse level, dual scenario): which of its pieces costs the coarse level.
HLE_WHY: dict[str, tuple[str, dict[str, Any]]] = {
    "er": ("er", {}),
    "er + class-balanced memory": ("er", {"memory": {"policy": "class_balanced"}}),
    "pl-fms": ("pl-fms", {}),
    "pl-fms + reservoir memory": ("pl-fms", {"memory": {"policy": "reservoir"}}),
    "pl-fms without PL": ("pl-fms", {"pseudo_label": False}),
}


def hle_part(
    directory: Path,
    learners: dict[str, tuple[str, dict[str, Any]]] | None = None,
    only: tuple[str, str] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    learners = learners or {name: (name, {}) for name in HLE_LEARNERS}
    specs = {
        "synthetic": SYNTHETIC,
        "fashion-mnist": hierarchy_npz(
            "fashion-mnist", FASHION_COARSE, (200, 100), directory / "fashion-hierarchy.npz"
        ),
        "digits": hierarchy_npz("digits", DIGITS_COARSE, (10_000, 10_000), directory / "d.npz"),
    }
    results: dict[str, Any] = {}
    for name, spec in specs.items():
        for scenario in HLE_SCENARIOS:
            if only is not None and (name, scenario) != only:
                continue
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in learners}
            for seed in SEEDS:
                stream = hle_stream(name, spec, scenario, seed, directory)
                n = len(stream.stream)
                loop = LoopConfig(**LOOP, eval_period=max(n // 25, 16))
                for label, (learner, extra) in learners.items():
                    memory = {"capacity": round(MEMORY_SHARE * n), **extra.get("memory", {})}
                    options: dict[str, Any] = {
                        "backbone": MLP,
                        **extra,
                        "memory": memory,
                        "seed": seed,
                    }
                    if learner == "pl-fms":
                        options["stream_length"] = n
                    result = replay(stream, learner, options, loop, "cpu")
                    levels = result["per_level"]
                    runs[label].append(
                        {
                            "coarse": _level(levels["coarse"]),
                            "fine": _level(levels["fine"]),
                            "samples": n,
                            "tasks": result["num_tasks"],
                        }
                    )
                    _say(f"hle {name} {scenario} seed {seed} {label}", runs[label][-1])
            results[f"{prefix}{name}/{scenario}"] = {
                "dataset": name,
                "scenario": scenario,
                "spec": spec if name == "synthetic" else f"{name} (npz written by bench)",
                "runs": runs,
            }
    return results


def _level(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "A_auc": summary["A_auc"],
        "A_last": summary["A_last"],
        "F_last": summary["F_last"],
        "curve": summary["curve"],
    }


def _say(label: str, figures: dict[str, Any]) -> None:
    flat = {
        f"{key}.{metric}": value
        for key, inner in figures.items()
        if isinstance(inner, dict)
        for metric, value in inner.items()
        if metric != "curve" and isinstance(value, float)
    } or {k: v for k, v in figures.items() if isinstance(v, float)}
    print(f"{label}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in flat.items()), flush=True)


# -- images ---------------------------------------------------------------------------------------

IMAGE_DATASETS = {
    # per class (train, test); the ViT patches the image into 16 tokens
    "digits": ((100, 30), {"patch_size": 2, "embed_dim": 32, "depth": 5, "num_heads": 2}),
    "fashion-mnist": (
        (200, 100),
        {"patch_size": 7, "embed_dim": 48, "depth": 5, "num_heads": 4, "mlp_ratio": 2.0},
    ),
}
PRETRAIN_CLASSES = [0, 1, 2, 3, 4]
SGD = {"optimizer": "sgd", "lr": 0.05}
IMAGE_METRICS = ("A_auc", "A_last", "F_last")


def pretrained_vit(spec: str, vit: dict[str, Any], exclude: np.ndarray, path: Path) -> dict:
    """A ViT pretrained on classes 0-4 of ``spec``'s training rows not in ``exclude``."""
    full = load_dataset(spec)
    rows = np.setdiff1d(np.flatnonzero(np.isin(full.y_train, PRETRAIN_CLASSES)), exclude)
    rows = np.random.default_rng(0).permutation(rows)[:5000]
    test = np.flatnonzero(np.isin(full.y_test, PRETRAIN_CLASSES))
    config = BackboneConfig(name="vit", vit=vit)
    result = pretrain(
        config,
        as_float_tensor(full.X_train[rows]),
        torch.as_tensor(full.y_train[rows]),
        PretrainConfig(epochs=8 if spec == "digits" else 4, lr=2e-3),
        test=(as_float_tensor(full.X_test[test]), torch.as_tensor(full.y_test[test])),
    )
    save_backbone(result.backbone, config, path, result.summary())
    print(
        f"pretrained vit on {spec} classes 0-4 ({len(rows)} images): test accuracy "
        f"{result.test_accuracy:.3f}",
        flush=True,
    )
    return {"images": len(rows), "test_accuracy": result.test_accuracy}


def image_learners(frozen: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "er": ("er", {"backbone": MLP, "memory": {"capacity": 200}}),
        "uer": ("uer", {"backbone": MLP, "memory": {"capacity": 200}}),
        # UER's paper trains with SGD; its norm argument needs it (docs/quality.md)
        "er, sgd 0.05": ("er", {"backbone": MLP, "memory": {"capacity": 200}, **SGD}),
        "uer, sgd 0.05": ("uer", {"backbone": MLP, "memory": {"capacity": 200}, **SGD}),
        "mvp": ("mvp", {"backbone": frozen}),
        "nmc (same frozen ViT)": ("nmc", {"backbone": frozen}),
    }


def mvp_variants(frozen: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "mvp (defaults)": ("mvp", {"backbone": frozen}),
        "mvp, no GSF": ("mvp", {"backbone": frozen, "use_gsf": False}),
        "mvp, no AFS": ("mvp", {"backbone": frozen, "use_afs": False}),
        "mvp, no logit masks": ("mvp", {"backbone": frozen, "use_mask": False}),
        "mvp, lr 1e-3": ("mvp", {"backbone": frozen, "lr": 1e-3}),
        "mvp, memory 200": ("mvp", {"backbone": frozen, "memory": {"capacity": 200}}),
        "linear head (er, no memory)": (
            "er",
            {"backbone": frozen, "memory": {"capacity": 0}, "lr": 5e-3},
        ),
        "nmc": ("nmc", {"backbone": frozen}),
    }


def image_part(directory: Path, parts: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (per_class, vit) in IMAGE_DATASETS.items():
        if name == "digits" and "images" not in parts:
            continue
        dataset, rows = subsample(name, *per_class)
        weights = directory / f"{name}-vit.safetensors"
        pretrained = pretrained_vit(name, vit, rows, weights)
        frozen = {"name": "vit", "vit": vit, "weights": str(weights), "freeze": True}
        chosen: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
        if "images" in parts:
            chosen["images"] = image_learners(frozen)
        if "mvp" in parts and name == "fashion-mnist":
            chosen["mvp"] = mvp_variants(frozen)
        for part, learners in chosen.items():
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in learners}
            for seed in SEEDS:
                stream = si_blurry_stream(dataset, seed, directory)
                loop = LoopConfig(**LOOP, eval_period=max(len(stream.stream) // 20, 16))
                for label, (learner, options) in learners.items():
                    result = replay(stream, learner, {**options, "seed": seed}, loop, "cpu")
                    figures = {m: result[m] for m in IMAGE_METRICS}
                    runs[label].append({**figures, "curve": result["curve"]})
                    _say(f"{part} {name} seed {seed} {label}", figures)
            results[f"{part}/{name}"] = {
                "dataset": dataset.spec,
                "schedule": "si-blurry T=5 N=50 M=10",
                "pretrained_vit": {"vit": vit, "classes": PRETRAIN_CLASSES, **pretrained},
                "runs": runs,
            }
    return results


# -- the page -------------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.pstdev(values)
    return f"{mean:.1f} ± {std:.1f}"


def hle_table(entry: dict[str, Any]) -> list[str]:
    header = "| learner | " + " | ".join(f"{lvl} {key}" for lvl, key in HLE_COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(HLE_COLUMNS)]
    for learner, runs in entry["runs"].items():
        cells = [_cell([r[lvl][key] for r in runs]) for lvl, key in HLE_COLUMNS]
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    return lines


def image_table(entry: dict[str, Any]) -> list[str]:
    lines = ["| learner | " + " | ".join(IMAGE_METRICS) + " |", "|---|" + "---:|" * 3]
    for label, runs in entry["runs"].items():
        cells = [_cell([r[m] for r in runs]) for m in IMAGE_METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _mean_curve(curves: list[list[list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean accuracy over seeds at each seed's evaluation positions, by evaluation index (a
    level's accuracy is None until a class of it has been seen: left out of the mean)."""
    length = min(len(c) for c in curves)
    x = np.mean([[p[0] for p in c[:length]] for c in curves], axis=0)
    y = np.array([[np.nan if p[1] is None else p[1] for p in c[:length]] for c in curves])
    seen = ~np.isnan(y).all(axis=0)
    return x[seen], np.nanmean(y[:, seen], axis=0)


def plot(dataset: str, results: dict[str, Any], path: Path) -> None:
    """One figure per dataset: its anytime-accuracy curves, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for key, entry in results.items():
        part, name = key.split("/")
        if name == dataset and part == "images":
            panels.append(
                ("Si-Blurry", {lbl: [r["curve"] for r in rs] for lbl, rs in entry["runs"].items()})
            )
        if part == dataset and name in HLE_SCENARIOS:
            for level in ("coarse", "fine"):
                curves = {lbl: [r[level]["curve"] for r in rs] for lbl, rs in entry["runs"].items()}
                panels.append((f"HLE {name}, {level}", curves))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels, strict=True):
        for label, runs in curves.items():
            x, y = _mean_curve(runs)
            axis.plot(x, 100 * y, label=label)
        axis.set_title(f"{dataset}: {title}", fontsize=9)
        axis.set_xlabel("stream samples")
        axis.set_ylabel("anytime accuracy %")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_page(results: dict[str, Any], commands: dict[str, str]) -> Path:
    """docs/results/quality.md: every table and plot of ``results`` with the command."""
    lines = [
        "# Learning quality: results",
        "",
        "Generated by `python -m bench quality` (bench/quality.py; its docstring gives every "
        "size and setting). Do not edit: rerun. The reading of these figures is in "
        "[docs/quality.md](../quality.md).",
        "",
        f"Seeds {', '.join(map(str, SEEDS))}; accuracies in %, mean ± std over seeds; measured "
        "on a shared, loaded 2-core machine (accuracies do not depend on the load). The "
        "commands that produced the figures below, per part:",
        "",
        *[f"- {part}: `{command}`" for part, command in sorted(commands.items())],
        "",
    ]
    hle = {k: v for k, v in results.items() if v.get("scenario") and not k.startswith("why:")}
    why = {k: v for k, v in results.items() if k.startswith("why:")}
    for title, chosen in (
        ("PL-FMS against ER per hierarchy level (HLE)", hle),
        ("Where PL-FMS loses: which piece costs the coarse level", why),
    ):
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        for entry in chosen.values():
            first = entry["runs"]["er"][0]
            lines += [
                f"### {entry['dataset']}, HLE {entry['scenario']} "
                f"({first['samples']} stream samples, {first['tasks']} tasks, memory "
                f"{round(MEMORY_SHARE * first['samples'])})",
                "",
                *hle_table(entry),
                "",
            ]
    for part, title in (
        ("images", "ER, UER and MVP on images (Si-Blurry)"),
        ("mvp", "Why MVP forgets"),
    ):
        chosen = {k: v for k, v in results.items() if k.startswith(f"{part}/")}
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        for entry in chosen.values():
            vit = entry["pretrained_vit"]
            lines += [
                f"### {entry['dataset']}",
                "",
                f"Frozen ViT for mvp and nmc: {json.dumps(vit['vit'])}, pretrained on classes "
                f"0–4 ({vit['images']} training images outside the stream), test accuracy "
                f"{100 * vit['test_accuracy']:.1f}% on those classes.",
                "",
                *image_table(entry),
                "",
            ]
    lines += ["## Plots", ""]
    for dataset in ("synthetic", "fashion-mnist", "digits"):
        png = DOCS / f"quality-{dataset}.png"
        plot(dataset, results, png)
        if png.exists():
            lines += [f"![{dataset}](quality-{dataset}.png)", ""]
    page = DOCS / "quality.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__)
    parser.add_argument(
        "--part",
        action="append",
        choices=["hle", "hle-why", "images", "mvp"],
        help="default: all four",
    )
    parser.add_argument(
        "--page", action="store_true", help="only rewrite the page from bench/out/quality.json"
    )
    args = parser.parse_args(argv)
    parts = set() if args.page else set(args.part or ["hle", "hle-why", "images", "mvp"])
    torch.set_num_threads(1)
    previous = output.OUT / "quality.json"
    results: dict[str, Any] = {}
    commands: dict[str, str] = {}
    if previous.exists():
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        results, commands = earlier.get("results", {}), earlier.get("commands", {})
    command = "python -m bench quality" if not argv else f"python -m bench.quality {' '.join(argv)}"
    commands.update({part: command for part in parts})
    with tempfile.TemporaryDirectory() as tmp:
        if "hle" in parts:
            results.update(hle_part(Path(tmp)))
            output.write(
                "quality", {"results": results, "commands": commands}
            )  # if a later part fails
        if "hle-why" in parts:
            results.update(hle_part(Path(tmp), HLE_WHY, ("digits", "dual"), prefix="why:"))
            output.write("quality", {"results": results, "commands": commands})
        if parts & {"images", "mvp"}:
            results.update(image_part(Path(tmp), parts))
    output.write("quality", {"results": results, "commands": commands})
    page = write_page(results, commands)
    print(f"written to {page}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
