"""The embedded demo: digits under Si-Blurry (T=5, N=50, M=10), several learners, one table.

Everything is generated locally (scikit-learn's bundled digits), so the demo runs on a fresh
machine without data or network, in well under two minutes on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.plots import plot_curves
from stream.runs.recorded_run import learner_folder, prepare, replay
from stream.runs.report import format_table

DATASET = "digits"
SCHEDULE = "si-blurry"
PARAMS = {"tasks": 5, "disjoint": 50, "blurry": 10}
SEED = 1
# Each learner with the options the demo gives it (small, CPU-friendly defaults).
LEARNERS: dict[str, dict[str, Any]] = {
    "nmc": {},
    "er": {"lr": 3e-3, "memory": {"capacity": 200}},
    "uer": {"lr": 3e-3, "memory": {"capacity": 200}},
    "acil": {"buffer_size": 512},
    "aef-ocl": {"buffer_size": 512},
    "slda": {},
}
# Three update steps per micro-batch, as the i-Blurry / Si-Blurry experiments use.
LOOP = LoopConfig(batch_size=16, online_iter=3.0, eval_period=100)


def run_demo(
    out_dir: str | Path,
    learners: Sequence[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Generate the demo stream, replay each learner, write results, table and plot."""
    out = Path(out_dir)
    dataset = load_dataset(DATASET)
    schedule, params = make_schedule(SCHEDULE, dataset, PARAMS, SEED)
    stream_path = write_stream(
        out / "stream.scl",
        record_schedule(dataset, schedule, SCHEDULE, params.model_dump(mode="json"), SEED),
    )
    prepared = prepare(stream_path, dataset)
    all_results: dict[str, dict[str, Any]] = {}
    for name in learners or LEARNERS:
        observers = []
        if progress:
            from stream.observe.progress import ProgressBar

            observers.append(ProgressBar(len(prepared.stream), name))
        all_results[name] = replay(
            prepared,
            name,
            LEARNERS.get(name, {}),
            LOOP,
            device,
            out / learner_folder(name),
            observers=observers,
        )
    table = format_table(all_results)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps(
            {
                n: {k: r[k] for k in ("A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy")}
                for n, r in all_results.items()
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    plot_curves(
        {n: r["curve"] for n, r in all_results.items()},
        out / "curve.png",
        title=f"{DATASET}, Si-Blurry T=5 N=50 M=10, seed {SEED}",
    )
    return all_results
