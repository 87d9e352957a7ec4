"""A recorded stream as wire messages with delayed labels (docs/serving.md).

Every event becomes a prediction request (one per message: JSON, or a binary micro-batch of
one) and its label ``{id, y, level}`` (JSON) follows as late as the delay says, in the order of
stream/data/label_delay.py. ``streamcl publish --label-delay`` and ``streamcl demo --daemon``
send these; ``streamcl replay --label-delay`` replays the same order without a broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from stream.data.datasets import Dataset, as_float_tensor
from stream.data.label_delay import delayed_order, label_delays
from stream.data.stream_file import RecordedStream
from stream.sources.serving_wire import encode_label_json, encode_request_json, encode_requests


def delayed_messages(
    stream: RecordedStream, dataset: Dataset | None, form: str, delay: int | str
) -> Iterator[tuple[bytes, int]]:
    """``(message, samples)``: requests count as one sample, labels as none."""
    for message, samples, _ in delayed_events(stream, dataset, form, delay):
        yield message, samples


def delayed_events(
    stream: RecordedStream, dataset: Dataset | None, form: str, delay: int | str
) -> Iterator[tuple[bytes, int, int]]:
    """``(message, samples, event)``: as :func:`delayed_messages`, with the stream event each
    message is about (its request or its label), so that a publisher can send both to one
    partition (a daemon joins a label only on its request's partition, docs/serving.md)."""
    delays = label_delays(delay, len(stream), stream.header.seed)
    for kind, i in delayed_order(len(stream), delays):
        if kind == "label":
            label = encode_label_json(int(stream.id[i]), int(stream.y[i]), int(stream.level[i]))
            yield label, 0, i
            continue
        if stream.x is not None:
            x = np.asarray(stream.x[i : i + 1])
        else:
            assert dataset is not None
            x = dataset.X_train[np.asarray(stream.row[i : i + 1])]
        ident, task = np.asarray(stream.id[i : i + 1]), np.asarray(stream.task[i : i + 1])
        if form == "json":
            floats = as_float_tensor(x).numpy()
            yield encode_request_json(floats[0], int(ident[0]), int(task[0])), 1, i
        else:
            pixels_or_floats = x if x.dtype == np.uint8 else as_float_tensor(x).numpy()
            yield encode_requests(pixels_or_floats, ident, task), 1, i
