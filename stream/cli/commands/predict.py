"""``streamcl predict STREAM --checkpoint DIR`` (or ``--model FILE``): predictions for a
recorded stream, one JSON line per event, as the daemon would have served them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from stream.cli.errors import UsageError
from stream.cli.output_path import (
    not_an_input,
    not_inside,
    replaceable_file,
    replaced_when_done,
)
from stream.data.datasets import as_float_tensor, load_dataset
from stream.data.stream_file import read_stream
from stream.runs.served_model import ServedModel, from_checkpoint, from_file, read_key
from stream.sinks.predictions import prediction_json
from stream.sources.file_source import check_against_dataset, check_events

CHUNK = 1024


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="predict a recorded stream with a daemon's checkpoint or an exported model",
        description="Predict every event of a recorded stream with the model of a checkpoint "
        "directory or an exported model file; write one JSON line per event (the prediction "
        "message of docs/serving.md plus the event's own y and level) and print the accuracy.",
    )
    parser.add_argument("stream", help="a stream file written by `streamcl schedule`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="a daemon's checkpoint.dir")
    source.add_argument("--model", metavar="FILE", help="a file written by `streamcl export`")
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        help="the checkpoint key (or env STREAMCL_CHECKPOINT_KEY): needed for a river model, "
        "whose state is a pickle loaded only from a checkpoint or an export signed with it",
    )
    parser.add_argument("--out", default="predictions.jsonl", help="JSON lines output")
    parser.add_argument("--top-k", type=int, default=None, help="k best classes, not all scores")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k <= 0:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    if args.checkpoint is not None:
        not_inside(Path(args.out), args.checkpoint, "the checkpoint directory")
    out = replaceable_file(args.out)
    model_file = None if args.model is None else Path(args.model)
    not_an_input(
        out,
        {
            "the stream being predicted": args.stream,
            "the model file": model_file,
            "the model's sidecar": None if model_file is None else model_file.with_suffix(".json"),
            "the key file": args.key_file,
        },
    )
    key = read_key(args.key_file, os.environ)
    model: ServedModel = (
        from_checkpoint(args.checkpoint, key) if args.checkpoint else from_file(args.model, key)
    )
    stream = read_stream(args.stream)
    dataset = None
    if stream.x is None:
        dataset = load_dataset(stream.header.dataset)
        check_against_dataset(stream, dataset, args.stream)
    shape = tuple(stream.header.input_shape)
    if shape and shape != tuple(model.problem.input_shape):
        raise UsageError(
            f"{args.stream} has inputs {shape}, the model takes {model.problem.input_shape}"
        )
    if list(stream.header.num_classes) != list(model.problem.num_classes):
        raise UsageError(
            f"{args.stream} has classes {stream.header.num_classes} per level, the model "
            f"{list(model.problem.num_classes)}"
        )
    # labels in the label space, finite inline inputs, unique ids: as a replay checks them
    check_events(stream, dataset, model.problem)
    serving = model.serving()
    names = model.problem.level_names
    correct = 0
    with replaced_when_done(out) as lines:
        for start in range(0, len(stream), CHUNK):
            stop = min(start + CHUNK, len(stream))
            raw = (
                np.asarray(stream.x[start:stop])
                if stream.x is not None
                else dataset.X_train[np.asarray(stream.row[start:stop])]  # type: ignore[union-attr]
            )
            prediction = serving.predict(as_float_tensor(raw).numpy())
            for i in range(stop - start):
                event = start + i
                y, level = int(stream.y[event]), int(stream.level[event])
                message = prediction_json(
                    int(stream.id[event]),
                    prediction.predicted[i].tolist(),
                    [scores[i] for scores in prediction.scores],
                    names,
                    prediction.position,
                    args.top_k,
                )
                message.update(y=y, level=level)
                correct += int(prediction.predicted[i, level] == y)
                lines.write(json.dumps(message, separators=(",", ":")) + "\n")
    accuracy = correct / len(stream) if len(stream) else float("nan")
    print(
        f"wrote {len(stream)} predictions of {model.learner_name} ({model.samples} samples "
        f"learned) to {out}; accuracy on the stream's labels {100 * accuracy:.2f}%"
    )
    return 0
