"""The accuracy/throughput frontier of the analytic learners' buffer width (docs/analytic.md).

For each dataset of :mod:`bench._analytic_data` (about 3,000 training samples, Si-Blurry) and
each width, ``streamcl replay``'s path (:func:`stream.runs.recorded_run.replay`: batch 16, every
batch predicted, evaluation every 1000 samples) runs each learner with its defaults but
``buffer_size``; it reports A_last, samples/s of wall time and samples per CPU-second, writes
``bench/out/analytic_frontier.json`` and plots the frontier to ``--plot``
(docs/analytic-frontier.png by default).

It runs torch on one thread (``--threads``) and plots samples per CPU-second: on a shared
machine, wall time depends on the other processes and two threads wait for each other's time
slices, while the CPU time of one thread is what the run itself costs. A quiet two-core machine
runs the large products on both cores, up to twice that rate.

    python -m bench analytic_frontier [--widths 1024 2048 4096 8192] [--learners acil]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench._analytic_data import DATASETS, stream
from bench.output import write
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import replay

DOCS = Path(__file__).resolve().parent.parent / "docs"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for learner in dict.fromkeys(r["learner"] for r in rows):
            line = [r for r in rows if r["dataset"] == dataset and r["learner"] == learner]
            if not line:
                continue
            axes.plot(
                [r["samples_per_cpu_second"] for r in line],
                [r["A_last"] for r in line],
                marker="o",
                label=f"{learner}, {dataset}",
            )
            for r in line:
                axes.annotate(
                    str(r["width"]), (r["samples_per_cpu_second"], r["A_last"]), fontsize=7
                )
    axes.set_xscale("log")
    axes.set_xlabel("samples per CPU-second, one thread (replay, batch 16, every batch predicted)")
    axes.set_ylabel("A_last")
    axes.axvline(1000, color="grey", linestyle=":", linewidth=1)
    axes.grid(alpha=0.3)
    axes.set_title("Buffer width: accuracy against throughput (labels: width)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench analytic_frontier", description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--learners", nargs="+", default=["acil"])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--plot", type=Path, default=DOCS / "analytic-frontier.png")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for dataset in args.datasets:
            prepared = stream(dataset, Path(work))
            for learner in args.learners:
                for width in args.widths:
                    cpu = time.process_time()
                    result = replay(
                        prepared,
                        learner,
                        {"buffer_size": width},
                        LoopConfig(batch_size=16, eval_period=1000),
                        device="cpu",
                    )
                    cpu = time.process_time() - cpu
                    row = {
                        "dataset": dataset,
                        "learner": learner,
                        "width": width,
                        "A_last": round(result["A_last"], 4),
                        "A_auc": round(result["A_auc"], 4),
                        "samples_per_second": round(result["samples_per_second"], 1),
                        "samples_per_cpu_second": round(result["samples"] / cpu, 1),
                        "samples": result["samples"],
                    }
                    rows.append(row)
                    print(
                        f"{dataset:<14} {learner:<8} {width:>5} A_last {row['A_last']:.3f} "
                        f"A_auc {row['A_auc']:.3f} {row['samples_per_second']:>8,.0f} samples/s "
                        f"{row['samples_per_cpu_second']:>8,.0f} per CPU-s",
                        flush=True,
                    )
    plot(rows, args.plot)
    print(f"plot written to {args.plot}")
    results = {"setup": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    write("analytic_frontier", results)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
