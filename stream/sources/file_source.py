"""Micro-batches read from a recorded stream file, cut as every source cuts them
(:func:`stream.sources.cuts.batch_starts`: never spanning two tasks)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from learners.base import Problem
from stream.data.datasets import Dataset, as_float_tensor
from stream.data.finite import all_finite
from stream.data.stream_file import RecordedStream, StreamFileError
from stream.engine.batch import Batch
from stream.engine.validation import outside_label_space
from stream.sources.cuts import batch_starts


def check_against_dataset(stream: RecordedStream, dataset: Dataset, where: str) -> None:
    """Refuse to replay a stream on data that is not the data it was recorded on."""
    expected = stream.header.dataset_fingerprint
    actual = dataset.fingerprint()
    for key, value in expected.items():
        if actual.get(key) != value:
            raise StreamFileError(
                f"{where}: recorded on {stream.header.dataset} with {key}={value}, "
                f"but the dataset loaded now has {key}={actual.get(key)}"
            )
    if not stream.header.inline and len(stream) and int(np.max(stream.row)) >= len(dataset.y_train):
        raise StreamFileError(
            f"{where}: refers to training rows beyond the dataset's {len(dataset.y_train)}"
        )


def check_events(stream: RecordedStream, dataset: Dataset | None, problem: Problem) -> None:
    """Check every event of ``stream`` against ``problem`` at once (labels, levels, input shape,
    finite inline inputs), so its batches need no per-batch check."""
    where = f"stream recorded on {stream.header.dataset}"
    shape = stream.x.shape[1:] if stream.x is not None else dataset.input_shape if dataset else None
    if shape is not None and tuple(shape) != tuple(problem.input_shape):
        raise StreamFileError(
            f"{where}: inputs {tuple(shape)}, the problem wants {problem.input_shape}"
        )
    bad = outside_label_space(
        np.asarray(stream.y), np.asarray(stream.level), np.asarray(problem.num_classes)
    )
    if bad is not None:
        raise StreamFileError(f"{where}: event {bad[0]} has {bad[2]}")
    x = stream.x
    if x is not None and np.issubdtype(x.dtype, np.floating) and not all_finite(x):
        event = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise StreamFileError(f"{where}: event {event} has NaN or inf in its input")


def task_batches(
    stream: RecordedStream,
    dataset: Dataset | None,
    batch_size: int,
    start: int = 0,
    problem: Problem | None = None,
) -> Iterator[Batch]:
    """Micro-batches of up to ``batch_size`` events from event ``start`` on, cut at task changes
    (:func:`~stream.sources.cuts.batch_starts`).

    With ``problem``, every event is checked once up front and the batches come marked
    validated; without it the event loop checks each batch.
    """
    task = np.asarray(stream.task)
    starts = batch_starts(task, batch_size, start)
    if problem is not None:
        check_events(stream, dataset, problem)
    source = stream.x
    if source is None and dataset is None:
        raise ValueError("a stream of dataset rows needs its dataset")
    if not starts:
        return
    ends = [*starts[1:], len(task)]  # batches tile the events from ``start`` on
    # Cut each event column into per-batch views in one call: slicing tensors one by one costs
    # more per batch than a small learner's update (bench/engine_overhead.py).
    cuts = starts[1:]
    first = starts[0]
    columns = [
        torch.from_numpy(np.array(a[first:], dtype=np.int64)).tensor_split(
            [c - first for c in cuts]
        )
        for a in (stream.y, stream.level, task, stream.id)
    ]
    inline = None
    if source is not None and source.dtype == np.float32 and source.flags.writeable:
        inline = torch.from_numpy(np.asarray(source[first:])).tensor_split(
            [c - first for c in cuts]
        )
    first_tasks = task[starts].tolist()
    for i, (lo, hi, y, level, tasks, ids, task_id) in enumerate(
        zip(starts, ends, *columns, first_tasks, strict=True)
    ):
        if inline is not None:
            x = inline[i]
        elif source is not None:
            x = as_float_tensor(source[lo:hi])
        else:
            assert dataset is not None
            x = as_float_tensor(dataset.X_train[np.asarray(stream.row[lo:hi])])
        yield Batch(
            x=x,
            y=y,
            level=level,
            task=tasks,
            ids=ids,
            validated=problem is not None,
            task_id=int(task_id),
        )
