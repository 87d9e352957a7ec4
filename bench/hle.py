"""HLE ``single`` streams: coarse and fine accuracy of ``er`` and ``pl-fms``, with ablations.

The stream is hierarchical label expansion, single-label scenario (``stream/schedules/hle.py``)
over the seeded synthetic hierarchy (10 coarse classes of 5 fine ones, 32-d Gaussian clusters;
no CIFAR-100 offline here). The settings follow the official HLE CIFAR-100 script where they
carry over: T = 6 tasks, online_iter = 3, stream batches of 16, a memory of 4% of the stream
(2000 of 50000 there, 200 of 5000 here), Adam; ``pl-fms`` gets the stream length as
``N_total``, as the official code uses the training-set size.

The rows after the first two take one piece of ``pl-fms`` away (or give ``er`` the class-balanced
memory) to show where the difference comes from. Accuracies, not speed, are measured, so torch
runs on one thread (on a shared machine extra threads only add contention).

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
from stream.datasets import load_dataset
from stream.event_loop import LoopConfig
from stream.replay import prepare, replay
from stream.schedules import make_schedule
from stream.stream_file import record_schedule, write_stream

DATASET = "synthetic-hierarchy:branching=10x5,separation=0.5"
SEEDS = (1, 2, 3)
MEMORY = 200
LOOP = LoopConfig(batch_size=16, online_iter=3.0, eval_period=200)

# name -> (learner, options); "{n}" in an option value is replaced by the stream length.
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "er": ("er", {"memory": {"capacity": MEMORY}}),
    "pl-fms": ("pl-fms", {"memory": {"capacity": MEMORY}, "stream_length": "{n}"}),
    "er + class-balanced memory": (
        "er",
        {"memory": {"capacity": MEMORY, "policy": "class_balanced"}},
    ),
    "pl-fms without PL": (
        "pl-fms",
        {"memory": {"capacity": MEMORY}, "stream_length": "{n}", "pseudo_label": False},
    ),
    "pl-fms without FMS": (
        "pl-fms",
        {"memory": {"capacity": MEMORY}, "flexible_sampling": False},
    ),
    "pl-fms, PL on stream samples too": (
        "pl-fms",
        {"memory": {"capacity": MEMORY}, "stream_length": "{n}", "pseudo_label_samples": "all"},
    ),
    "pl-fms, coarse PL over all classes": (
        "pl-fms",
        {"memory": {"capacity": MEMORY}, "stream_length": "{n}", "pseudo_label_classes": "all"},
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


def _options(options: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    return {k: (n if v == "{n}" else v) for k, v in options.items()} | {"seed": seed}


def run(dataset_spec: str, seeds: tuple[int, ...], names: list[str]) -> dict[str, Any]:
    """Every named run on an HLE single stream per seed; per-level figures per run and seed."""
    dataset = load_dataset(dataset_spec)
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
                learner, options = RUNS[name]
                result = replay(
                    prepared, learner, _options(options, len(schedule), seed), LOOP, "cpu"
                )
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
        "schedule": "hle single (T = 6)",
        "seeds": list(seeds),
        "loop": LOOP.model_dump(),
        "memory": MEMORY,
        "runs": {name: {"learner": RUNS[name][0], "options": RUNS[name][1]} for name in names},
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
    parser.add_argument("--dataset", default=DATASET, help="a dataset with hierarchy levels")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--no-ablations", action="store_true", help="only er and pl-fms")
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    names = list(MAIN) if args.no_ablations else list(RUNS)
    torch.set_num_threads(1)
    results = run(args.dataset, seeds, names)
    print(f"HLE single on {args.dataset}, seeds {list(seeds)}; accuracies in %, mean ± std")
    print(table(results))
    path = output.write("hle", results)
    print(f"written to {path}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
