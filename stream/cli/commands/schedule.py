"""``streamcl schedule``: generate a recorded stream from a dataset and a schedule."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import structlog

from stream.cli.errors import UsageError
from stream.cli.output_path import writable_file
from stream.data.datasets import load_dataset
from stream.data.label_delay import check_label_delay
from stream.data.option_value import option_value
from stream.data.schedules import make_schedule, params_model, schedule_names
from stream.data.schedules.si_blurry import tasks_keeping_every_class
from stream.data.stream_file import record_schedule, write_stream

log = structlog.get_logger("streamcl.schedule")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "schedule",
        help="generate a recorded stream (disjoint, i-blurry, si-blurry, hle, ordered)",
        description="Generate a recorded stream. The output form follows the suffix: "
        ".jsonl for JSON lines, anything else (e.g. .scl) for the fast binary form.",
    )
    parser.add_argument("schedule", choices=schedule_names())
    parser.add_argument(
        "--dataset",
        required=True,
        help="digits, fashion-mnist[:DIR], cifar100:DIR, npz:PATH, synthetic-hierarchy[:k=v,...],"
        " river:NAME[?KEY=VALUE&...]",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        help=f"number of tasks T (default: {_defaults('tasks')}; "
        "hle: 1 + min(5, #coarse), multi-depth: L)",
    )
    parser.add_argument(
        "--disjoint",
        type=int,
        help=f"N: percent of disjoint classes (default: {_defaults('disjoint')})",
    )
    parser.add_argument(
        "--blurry",
        type=int,
        help=f"M: percent of blurry samples mixed (default: {_defaults('blurry')})",
    )
    parser.add_argument(
        "--non-stochastic", action="store_true", help="si-blurry with fixed task sizes"
    )
    parser.add_argument("--scenario", help="hle: single (default), dual or multi-depth")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other schedule parameter (VALUE parsed as JSON when it can be)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the schedule's draws")
    parser.add_argument(
        "--inline", action="store_true", help="store inputs in the stream, not row references"
    )
    parser.add_argument(
        "--label-delay",
        default=None,
        metavar="DELAY",
        help="labels arrive late: N samples, uniform:A-B or exponential:MEAN (drawn with the "
        "seed); replay and publish then predict each sample before its label is known "
        "(docs/serving.md)",
    )
    parser.add_argument("--out", required=True, help="output stream file (.jsonl or .scl)")
    parser.set_defaults(run=run)


def _defaults(field: str) -> str:
    """Each schedule's default for ``field``, read from its parameters, e.g. ``5 for disjoint,
    si-blurry; 1 for ordered``; schedules without the field (or without a fixed default) are
    left out."""
    schedules: dict[Any, list[str]] = {}
    for name in schedule_names():
        info = params_model(name).model_fields.get(field)
        if info is not None and info.default is not None:
            schedules.setdefault(info.default, []).append(name)
    return "; ".join(f"{value} for {', '.join(names)}" for value, names in schedules.items())


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in ("tasks", "disjoint", "blurry", "scenario"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.non_stochastic:
        params["stochastic"] = False
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        params[key] = option_value(value)
    return params


def run(args: argparse.Namespace) -> int:
    writable_file(args.out)
    dataset = load_dataset(args.dataset)
    schedule, params = make_schedule(args.schedule, dataset, _params(args), args.seed)
    dropped = schedule.info.get("dropped_classes")
    if dropped:
        # Only the stream's header would say so otherwise: "wrote 500 events" of 700.
        assert dataset.y_train_levels is not None
        labels = dataset.y_train_levels[:, -1]
        classes, tasks = len(np.unique(labels)), schedule.num_tasks
        log.warning(
            "classes_dropped",
            classes=dropped,
            samples=int(np.isin(labels, dropped).sum()),
            of=len(labels),
            why=f"{args.schedule} keeps classes in multiples of the task count, {tasks}",
            fix=f"--tasks {tasks_keeping_every_class(classes, tasks)}, a divisor of the "
            f"{classes} classes, keeps every class",
        )
    recorded = record_schedule(
        dataset,
        schedule,
        args.schedule,
        params.model_dump(mode="json"),
        args.seed,
        inline=args.inline,
    )
    if args.label_delay is not None:
        delay = check_label_delay(args.label_delay)
        recorded.header = recorded.header.model_copy(update={"label_delay": delay})
    path = write_stream(args.out, recorded)
    sizes = [int((schedule.task == t).sum()) for t in range(schedule.num_tasks)]
    print(f"wrote {len(schedule)} events in {schedule.num_tasks} tasks {sizes} to {path}")
    return 0
