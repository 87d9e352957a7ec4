"""Replaying a recorded stream through a learner: the research evaluation path.

``replay`` loads the stream and the dataset it names, builds the learner from the registry,
runs the event loop with anytime evaluation on the dataset's test split, and returns (and
optionally writes) ``results.json`` with every metric of docs/metrics.md plus the run's provenance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learners import registry
from learners.base import Learner, LearnerConfig, Problem
from stream.data.datasets import Dataset, load_dataset
from stream.data.stream_file import RecordedStream, StreamFileError, read_stream
from stream.engine.device import resolve_device
from stream.engine.evaluation import AnytimeEvaluator
from stream.engine.event_loop import EventLoop, LoopConfig, Observer
from stream.runs.delayed_labels import run_delayed
from stream.runs.plots import plot_curves
from stream.sources.file_source import check_against_dataset, check_events, task_batches


def learner_folder(learner: str) -> str:
    """The folder a run of ``learner`` writes to, by default (``streamcl replay``: under
    ``runs/``; ``streamcl demo``: under its --out): the learner's name with each ``:`` as ``_``,
    so ``river:tree.HoeffdingTreeClassifier`` writes to ``river_tree.HoeffdingTreeClassifier``
    (Windows refuses a colon in a folder name, and elsewhere it splits lists of paths)."""
    return learner.replace(":", "_")


@dataclass
class PreparedStream:
    """A recorded stream with its dataset, label space and test-set evaluator inputs."""

    path: Path
    stream: RecordedStream
    dataset: Dataset
    problem: Problem


def prepare(path: str | Path, dataset: Dataset | None = None) -> PreparedStream:
    """Read the stream at ``path`` and load (or check) the dataset it was recorded on."""
    path = Path(path)
    stream = read_stream(path)
    dataset = dataset or load_dataset(stream.header.dataset)
    check_against_dataset(stream, dataset, str(path))
    problem = dataset.problem()
    if list(problem.num_classes) != list(stream.header.num_classes):
        raise StreamFileError(
            f"{path}: stream label space {stream.header.num_classes} != dataset {list(problem.num_classes)}"
        )
    return PreparedStream(path, stream, dataset, problem)


def replay(
    prepared: PreparedStream,
    learner_name: str,
    options: dict[str, Any] | LearnerConfig | None = None,
    loop_config: LoopConfig | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    observers: Sequence[Observer] = (),
    label_delay: int | str | None = None,
) -> dict[str, Any]:
    """Run ``learner_name`` over ``prepared``; write results.json and curve.png to ``out_dir``.

    With ``label_delay`` (stream/data/label_delay.py), every sample is a prediction request
    first and its label comes that late (stream/runs/delayed_labels.py)."""
    loop_config = loop_config or LoopConfig()
    torch_device = resolve_device(device)
    learner: Learner = registry.create(learner_name, prepared.problem, options, torch_device)
    header = prepared.stream.header
    loop = EventLoop(
        learner,
        prepared.problem,
        loop_config,
        evaluator=AnytimeEvaluator.on_test_split(
            prepared.dataset, prepared.problem, loop_config.eval_batch_size, torch_device
        ),
        num_tasks=header.num_tasks,
        observers=observers,
        learner_name=learner_name,
    )
    started = time.perf_counter()
    serving: dict[str, Any] = {}
    if label_delay is None:
        loop.run(
            task_batches(
                prepared.stream, prepared.dataset, loop_config.batch_size, problem=prepared.problem
            )
        )
    else:
        check_events(prepared.stream, prepared.dataset, prepared.problem)
        serving = run_delayed(loop, prepared.stream, prepared.dataset, label_delay)
    seconds = time.perf_counter() - started
    results = loop.summary()
    results.update(serving)
    results.update(
        learner=learner_name,
        config=learner.config.model_dump(mode="json"),
        loop=loop_config.model_dump(mode="json"),
        device=str(torch_device),
        seconds=seconds,
        learn_seconds=loop.learn_seconds,
        evaluation_seconds=loop.evaluation_seconds,
        samples_per_second=loop.samples_seen / seconds if seconds > 0 else None,
        stream=str(prepared.path),
        dataset=header.dataset,
        schedule=header.schedule,
        schedule_params=header.params,
        seed=header.seed,
        num_tasks=header.num_tasks,
    )
    for level in results.get("per_level", {}).values():
        # one pass learns every level: a level's rate is its samples over the run's seconds
        level["seconds"] = seconds
        level["samples_per_second"] = (
            level["samples"] / seconds if seconds > 0 and level["samples"] is not None else None
        )
    if out_dir is not None:
        write_results(results, out_dir)
    return results


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """``results.json`` and ``curve.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot_curves(
        {results["learner"]: results["curve"]},
        out / "curve.png",
        title=f"{results['learner']} on {results['dataset']} ({results['schedule']})",
    )
    return path
