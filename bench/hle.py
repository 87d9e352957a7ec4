"""HLE ``single`` streams: coarse and fine accuracy of ``er`` and ``pl-fms``, with ablations.

The stream is hierarchical label expansion, single-label scenario (``stream/schedules/hle.py``;
no CIFAR-100 offline here), over

- ``synthetic`` (default): the seeded synthetic hierarchy, 10 coarse classes of 5 fine ones,
  32-d Gaussian clusters, 100 training samples per fine class;
- ``fashion-mnist``: Fashion-MNIST with the coarse classes tops (T-shirt/top, pullover, coat,
  shirt), bottoms and dresses (trouser, dress), footwear (sandal, sneaker, ankle boot) and bags,
  1500 training and 300 test images per class (``--dataset fashion-mnist``, slower);
- any other dataset spec with hierarchy levels.

The settings follow the official HLE CIFAR-100 script where they carry over: T = 1 + min(5,
#coarse) tasks, online_iter = 3, stream batches of 16, a memory of 4% of the stream (2000 of
50000 there), Adam, about 25 anytime evaluations; ``pl-fms`` gets the stream length as
``N_total``, as the official code uses the training-set size. The rows after the first two take
one piece of ``pl-fms`` away (or give ``er`` the class-balanced memory) to show where the
difference comes from. Accuracies, not speed, are measured, so torch runs on one thread (on a
shared machine extra threads only add contention).

``python -m bench hle`` prints the table and writes ``bench/out/hle.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import output
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import prepare, replay

SYNTHETIC = "synthetic-hierarchy:branching=10x5,separation=0.5"
SEEDS = (1, 2, 3)
MEMORY_SHARE = 0.04
EVALUATIONS = 25
# Fashion-MNIST class -> coarse class: tops, bottoms and dresses, footwear, bags.
FASHION_COARSE = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])
FASHION_PER_CLASS = (1500, 300)

# name -> (learner, options, memory policy or None for the learner's default); "{n}" in an
# option value is replaced by the stream length.
RUNS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "er": ("er", {}, None),
    "pl-fms": ("pl-fms", {"stream_length": "{n}"}, None),
    "er + class-balanced memory": ("er", {}, "class_balanced"),
    "pl-fms without PL": ("pl-fms", {"stream_length": "{n}", "pseudo_label": False}, None),
    "pl-fms without FMS": ("pl-fms", {"flexible_sampling": False}, None),
    "pl-fms, PL on stream samples too": (
        "pl-fms",
        {"stream_length": "{n}", "pseudo_label_samples": "all"},
        None,
    ),
    "pl-fms, coarse PL over all classes": (
        "pl-fms",
        {"stream_length": "{n}", "pseudo_label_classes": "all"},
        None,
    ),
}
MAIN = ("er", "pl-fms")
COLUMNS = (
    ("coarse", "A_auc"),
    ("coarse", "A_last"),
    ("coarse", "A_last_either"),
    ("fine", "A_auc"),
    ("fine", "A_last"),
)


def _options(name: str, n: int, capacity: int, seed: int) -> dict[str, Any]:
    _, options, policy = RUNS[name]
    memory: dict[str, Any] = {"capacity": capacity}
    if policy is not None:
        memory["policy"] = policy
    resolved = {k: (n if v == "{n}" else v) for k, v in options.items()}
    return resolved | {"memory": memory, "seed": seed}


def fashion_mnist_hierarchy(directory: Path) -> str:
    """A two-level Fashion-MNIST subset as an ``npz:`` dataset in ``directory``."""
    full = load_dataset("fashion-mnist")
    rng = np.random.default_rng(0)
    splits = {}
    for split, X, y, per_class in (
        ("train", full.X_train, full.y_train, FASHION_PER_CLASS[0]),
        ("test", full.X_test, full.y_test, FASHION_PER_CLASS[1]),
    ):
        rows = np.sort(
            np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)])
        )
        splits[f"X_{split}"], splits[f"y_{split}"] = X[rows], y[rows]
        splits[f"y_{split}_levels"] = np.stack([FASHION_COARSE[y[rows]], y[rows]], axis=1)
    path = directory / "fashion-mnist-hierarchy.npz"
    np.savez(path, **splits, level_names=np.array(["coarse", "fine"]))
    return f"npz:{path}"


def run(dataset_spec: str, seeds: tuple[int, ...], names: list[str]) -> dict[str, Any]:
    """Every named run on an HLE single stream per seed; per-level figures per run and seed."""
    dataset = load_dataset(dataset_spec)
    n = len(dataset.y_train)
    capacity = round(MEMORY_SHARE * n)
    loop = LoopConfig(batch_size=16, online_iter=3.0, eval_period=max(n // EVALUATIONS, 1))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            schedule, params = make_schedule("hle", dataset, {"scenario": "single"}, seed)
            recorded = record_schedule(
                dataset, schedule, "hle", params.model_dump(mode="json"), seed
            )
            prepared = prepare(write_stream(Path(tmp) / f"hle-{seed}.scl", recorded), dataset)
            coarsest, finest = prepared.problem.level_names[0], prepared.problem.level_names[-1]
            for name in names:
                options = _options(name, len(schedule), capacity, seed)
                result = replay(prepared, RUNS[name][0], options, loop, "cpu")
                levels = {
                    "coarse": result["per_level"][coarsest],
                    "fine": result["per_level"][finest],
                }
                figures[name].append(
                    {f"{lvl}.{key}": levels[lvl][key] for lvl, key in COLUMNS}
                    | {"A_auc": result["A_auc"], "seconds": result["seconds"]}
                )
    return {
        "dataset": dataset_spec,
        "schedule": f"hle single, T = {schedule.num_tasks}",
        "seeds": list(seeds),
        "loop": loop.model_dump(),
        "memory": capacity,
        "runs": {name: _options(name, len(schedule), capacity, 0) for name in names},
        "per_seed": figures,
        "mean": {n: _mean(f) for n, f in figures.items()},
        "std": {n: _std(f) for n, f in figures.items()},
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _std(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.std([r[k] for r in rows])) for k in rows[0]}


def table(results: dict[str, Any]) -> str:
    """Markdown table: mean ± std over seeds, in percent."""
    header = ["run", *[f"{lvl} {key.replace('_either', ' either')}" for lvl, key in COLUMNS]]
    rows = []
    for name in results["mean"]:
        mean, std = results["mean"][name], results["std"][name]
        cells = [f"{100 * mean[f'{l}.{k}']:.1f} ± {100 * std[f'{l}.{k}']:.1f}" for l, k in COLUMNS]
        rows.append([name, *cells])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.hle", description=__doc__)
    parser.add_argument(
        "--dataset", default="synthetic", help="synthetic, fashion-mnist, or a dataset spec"
    )
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--no-ablations", action="store_true", help="only er and pl-fms")
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    names = list(MAIN) if args.no_ablations else list(RUNS)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"synthetic": SYNTHETIC}.get(args.dataset, args.dataset)
        if args.dataset == "fashion-mnist":
            spec = fashion_mnist_hierarchy(Path(tmp))
        results = run(spec, seeds, names)
    results["dataset_name"] = args.dataset
    print(
        f"HLE single on {args.dataset} ({results['schedule']}, memory {results['memory']}), "
        f"seeds {list(seeds)}; accuracies in %, mean ± std"
    )
    print(table(results))
    topic = {"synthetic": "hle", "fashion-mnist": "hle-fashion-mnist"}.get(
        args.dataset, "hle-custom"
    )
    path = output.write(topic, results)
    print(f"written to {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
