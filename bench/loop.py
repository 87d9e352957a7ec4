"""The engine against plain loops: ``er`` vs a hand-written PyTorch ER loop, ``nmc`` vs a bare loop.

``er``: a Si-Blurry stream (T=5, N=50, M=10, seed 1) over a class-balanced subsample of
Fashion-MNIST (digits upscaled to 28x28 where it is not installed) and over a synthetic stream
of 784-d Gaussian classes, replayed by ``streamcl replay --learner er`` (the same
``stream.runs.recorded_run.replay`` the command calls; default config: MLP 784-256-128, Adam
1e-3, reservoir memory 500, 16 stream + 16 replayed samples per step, evaluation every 1000
samples and at task ends) and by the plain loop of ``bench/_plain_er.py`` over the same
micro-batches and test set. Reported, as the median over repeats of the ratio within each
back-to-back pair (load from other processes hits both of a pair):

- ``learn``: training samples/s of ``er``'s ``learn`` (with the fused prequential forward)
  over the plain loop's training part (replay, step, insertion);
- ``whole``: the whole replay (reading, prequential accuracy, learning, evaluations) over the
  whole plain loop.

Each by wall clock and by this process's CPU time (``time.process_time``; ``er``'s ``learn``
is timed by wrapping the learner's method), the steadier figure where other processes load
the machine: both loops run one process, and with one torch thread the two agree on a quiet
machine.

``nmc``: :mod:`bench.engine_overhead` (engine vs bare ``predict``/``learn``) at batch 16, 64, 256.

Both on one torch thread and on two. Targets: learn ≥ 0.9, whole ≥ 0.8, nmc ≥ 0.9 at 64 and 256.

    python -m bench loop [--train-per-class 1000] [--repeats 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from bench import engine_overhead, output
from bench._plain_er import plain_er
from bench._streams import si_blurry_stream, subsample
from learners.er import ER
from stream.data.datasets import Dataset, DatasetError, as_float_tensor, load_dataset
from stream.engine.event_loop import LoopConfig
from stream.runs.recorded_run import PreparedStream, replay
from stream.sources.file_source import task_batches

BATCH = 16


def upscaled_digits() -> Dataset:
    """scikit-learn's digits as 28x28 images, the size of Fashion-MNIST's."""
    digits = load_dataset("digits")

    def up(X: np.ndarray) -> np.ndarray:
        images = torch.nn.functional.interpolate(
            torch.from_numpy(X), size=(28, 28), mode="bilinear"
        )
        return images.numpy()

    return Dataset(
        "digits[28x28]", up(digits.X_train), digits.y_train, up(digits.X_test), digits.y_test
    )


def synthetic(classes: int, train_per_class: int, test_per_class: int) -> Dataset:
    """784-d Gaussian classes, seeded."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, 784)).astype(np.float32)

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), per_class)
        return centres[y] + rng.normal(scale=3.0, size=(len(y), 784)).astype(np.float32), y

    (X_train, y_train), (X_test, y_test) = draw(train_per_class), draw(test_per_class)
    return Dataset(f"synthetic[{classes}x784]", X_train, y_train, X_test, y_test)


def image_dataset(train_per_class: int, test_per_class: int) -> Dataset:
    try:
        return subsample("fashion-mnist", train_per_class, test_per_class)[0]
    except DatasetError as exc:
        print(f"{exc}; using digits upscaled to 28x28 instead")
        return upscaled_digits()


def run_plain(prepared: PreparedStream) -> dict[str, float]:
    dataset = prepared.dataset
    batches = (
        (b.x, b.y, int(b.task[0]))
        for b in task_batches(prepared.stream, dataset, BATCH, problem=prepared.problem)
    )
    result = plain_er(
        batches,
        as_float_tensor(dataset.X_test),
        torch.from_numpy(dataset.y_test),
        prepared.problem.num_classes[0],
    )
    return {
        "samples": result.samples,
        "train_seconds": result.train_seconds,
        "train_cpu": result.train_cpu,
        "seconds": result.seconds,
        "cpu": result.cpu,
        "A_last": result.A_last,
        "prequential_accuracy": result.prequential_accuracy,
    }


@contextmanager
def cpu_of_learn() -> Iterator[list[float]]:
    """CPU seconds spent in ``er``'s per-batch call (``predict_then_learn``), while open."""
    spent = [0.0]
    method = ER.predict_then_learn

    def timed(self: ER, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return method(self, *args, **kwargs)
        finally:
            spent[0] += time.process_time() - started

    ER.predict_then_learn = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        ER.predict_then_learn = method  # type: ignore[method-assign]


def run_engine(prepared: PreparedStream) -> dict[str, float]:
    started = time.process_time()
    with cpu_of_learn() as learn_cpu:
        results = replay(prepared, "er", {}, LoopConfig(batch_size=BATCH), "cpu")
    return {
        "samples": results["samples"],
        "train_seconds": results["learn_seconds"],
        "train_cpu": learn_cpu[0],
        "seconds": results["seconds"],
        "cpu": time.process_time() - started,
        "evaluation_seconds": results["evaluation_seconds"],
        "A_last": results["A_last"],
        "prequential_accuracy": results["prequential_accuracy"],
    }


def compare(prepared: PreparedStream, repeats: int) -> dict[str, Any]:
    """Paired medians of engine over plain, alternating which of a pair runs first."""
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "engine": []}
    for repeat in range(repeats):
        order = [("plain", run_plain), ("engine", run_engine)]
        for name, run in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(run(prepared))
    pairs = list(zip(runs["plain"], runs["engine"], strict=True))
    samples = runs["engine"][0]["samples"]

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs["engine"])

    return {
        "samples": samples,
        "learn_over_plain": statistics.median(
            p["train_seconds"] / e["train_seconds"] for p, e in pairs
        ),
        "whole_over_plain": statistics.median(p["seconds"] / e["seconds"] for p, e in pairs),
        "learn_over_plain_cpu": statistics.median(
            p["train_cpu"] / e["train_cpu"] for p, e in pairs
        ),
        "whole_over_plain_cpu": statistics.median(p["cpu"] / e["cpu"] for p, e in pairs),
        "plain_train_samples_per_second": samples
        / statistics.median(r["train_seconds"] for r in runs["plain"]),
        "engine_learn_samples_per_second": samples / median("train_seconds"),
        "plain_samples_per_second": samples
        / statistics.median(r["seconds"] for r in runs["plain"]),
        "engine_samples_per_second": samples / median("seconds"),
        "engine_evaluation_seconds": median("evaluation_seconds"),
        "plain_A_last": runs["plain"][0]["A_last"],
        "engine_A_last": runs["engine"][0]["A_last"],
        "plain_prequential": runs["plain"][0]["prequential_accuracy"],
        "engine_prequential": runs["engine"][0]["prequential_accuracy"],
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench loop")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nmc-samples", type=int, default=30_000)
    parser.add_argument("--nmc-repeats", type=int, default=5)
    parser.add_argument("--skip-nmc", action="store_true")
    args = parser.parse_args(argv)

    datasets = {
        "image": image_dataset(args.train_per_class, args.test_per_class),
        "synthetic": synthetic(10, args.train_per_class, args.test_per_class),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = {name: si_blurry_stream(d, 1, tmp + f"/{name}") for name, d in datasets.items()}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, stream in prepared.items():
                row = {
                    "stream": stream.dataset.spec,
                    "threads": threads,
                    **compare(stream, args.repeats),
                }
                rows.append(row)
                print(
                    f"er {name:9s} threads {threads}: CPU time: learn {row['learn_over_plain_cpu']:.2f}x, "
                    f"whole {row['whole_over_plain_cpu']:.2f}x; wall: learn {row['learn_over_plain']:.2f}x "
                    f"({row['engine_learn_samples_per_second']:,.0f} vs {row['plain_train_samples_per_second']:,.0f}/s), "
                    f"whole {row['whole_over_plain']:.2f}x ({row['engine_samples_per_second']:,.0f} vs "
                    f"{row['plain_samples_per_second']:,.0f}/s), A_last {row['engine_A_last']:.3f} vs {row['plain_A_last']:.3f}"
                )
    nmc: list[dict[str, Any]] = []
    if not args.skip_nmc:
        for threads in args.threads:
            result = engine_overhead.main(
                [
                    f"--samples={args.nmc_samples}",
                    "--batch-sizes=16,64,256",
                    f"--repeats={args.nmc_repeats}",
                    f"--threads={threads}",
                ]
            )
            nmc.extend({"threads": threads, **r} for r in result["rows"])
    results = {
        "er": rows,
        "nmc": nmc,
        "targets": {"learn_over_plain": 0.9, "whole_over_plain": 0.8, "nmc_engine_over_bare": 0.9},
    }
    output.write("loop", results)
    return results
