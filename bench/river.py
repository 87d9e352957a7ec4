"""River models through streamcl vs river's own loop: samples/s, measured in the same run.

For each model the same samples, in the same order, go

- through river alone: ``evaluate.progressive_val_score`` over a list of ``(dict, label)``
  pairs (test-then-train with river's ``Accuracy``), and
- through streamcl's replay path: a recorded binary stream file (``ordered`` schedule over a
  ``river:`` dataset), micro-batches, the event loop with per-sample test-then-train and
  rolling prequential accuracy.

The river side gets the float32 feature values streamcl stores, so both sides do the same model
work; their prequential accuracies are checked equal. Each side's time is the best of
``--repeats`` interleaved runs, as wall-clock time and as the process's CPU time (on a machine
shared with other jobs the CPU time is the steadier figure). Target: streamcl keeps at least 85%
of river's samples/s.

    python -m bench river                       # the defaults
    python -m bench.river [--dataset SPEC] [--batch-size B] [--repeats R] [--models a,b]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from bench.output import write
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import record_schedule, write_stream
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import prepare, replay

TARGET = 0.85
DATASET = "river:RandomRBF?n=20000&n_features=10&n_classes=5&seed=1&test_every=0"
# streamcl learner options, and the same model built in river.
MODELS: dict[str, dict[str, Any]] = {
    "tree.HoeffdingTreeClassifier": {},
    "linear_model.SoftmaxRegression": {
        "preprocessing": [{"target": "preprocessing.StandardScaler"}]
    },
    "naive_bayes.GaussianNB": {},
}


def river_model(target: str, options: dict[str, Any]) -> Any:
    from learners.river_learner import RiverConfig, build_model

    return build_model(RiverConfig(target=target, **options))


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench river", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", default=DATASET, help="a river: dataset spec")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated module.Class")
    args = parser.parse_args(argv)
    from river import evaluate, metrics

    dataset = load_dataset(args.dataset)
    schedule, params = make_schedule("ordered", dataset, {}, seed=0)
    data: list[tuple[dict[Hashable, Any], int]] = [
        (dict(enumerate(row)), int(label))
        for row, label in zip(dataset.X_train.tolist(), dataset.y_train.tolist(), strict=True)
    ]
    config = LoopConfig(batch_size=args.batch_size, eval_period=None)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.scl"
        write_stream(path, record_schedule(dataset, schedule, "ordered", params.model_dump(), 0))
        prepared = prepare(path)
        for target in args.models.split(","):
            options = MODELS.get(target, {})
            best = {key: float("inf") for key in ("river", "streamcl", "river_cpu", "streamcl_cpu")}
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                river_accuracy = evaluate.progressive_val_score(
                    data, river_model(target, options), metrics.Accuracy()
                ).get()
                best["river"] = min(best["river"], time.perf_counter() - wall)
                best["river_cpu"] = min(best["river_cpu"], time.process_time() - cpu)
                wall, cpu = time.perf_counter(), time.process_time()
                results = replay(prepared, f"river:{target}", options, config, "cpu")
                best["streamcl"] = min(best["streamcl"], time.perf_counter() - wall)
                best["streamcl_cpu"] = min(best["streamcl_cpu"], time.process_time() - cpu)
            rows[target] = {
                "river_samples_per_second": len(data) / best["river"],
                "streamcl_samples_per_second": len(data) / best["streamcl"],
                "ratio": best["river"] / best["streamcl"],
                "ratio_cpu_time": best["river_cpu"] / best["streamcl_cpu"],
                "prequential_accuracy": results["prequential_accuracy"],
                "accuracy_equal": results["prequential_accuracy"] == river_accuracy,
            }
    print(
        f"{args.dataset}: {len(data)} samples, batch size {args.batch_size}, best of {args.repeats}"
    )
    print(f"| {'model':<32} | river /s | streamcl /s | ratio | ratio (CPU time) | same accuracy |")
    print(f"|{'-' * 34}|----------|-------------|-------|------------------|---------------|")
    for target, row in rows.items():
        same = "yes" if row["accuracy_equal"] else "NO"
        print(
            f"| {target:<32} | {row['river_samples_per_second']:>8,.0f} "
            f"| {row['streamcl_samples_per_second']:>11,.0f} | {row['ratio']:>5.2f} "
            f"| {row['ratio_cpu_time']:>16.2f} | {same:>13} |"
        )
    record = {
        "dataset": args.dataset,
        "samples": len(data),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "target_ratio": TARGET,
        "models": rows,
    }
    write("river", record)
    return record


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
