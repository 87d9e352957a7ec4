"""Replaying a recorded stream with delayed labels, through the daemon's serving path.

Each sample is first a prediction request, and its label arrives ``delay`` samples later
(stream/data/label_delay.py gives the order). The events go through the same
:class:`~stream.engine.serving.ServingLoop` the daemon uses, so prequential accuracy is scored
on the predictions that were served before the labels were known, and equals what
``streamcl serve`` scores on the same stream published with the same delay. Consecutive
requests are predicted together: the model does not change between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.data.datasets import Dataset, as_float_tensor
from stream.data.label_delay import delayed_order, label_delays
from stream.data.stream_file import RecordedStream
from stream.engine.event_loop import EventLoop
from stream.engine.label_join import LabelJoin
from stream.engine.serving import ServingLoop


def run_delayed(
    loop: EventLoop, stream: RecordedStream, dataset: Dataset | None, delay: int | str
) -> dict[str, Any]:
    """Feed ``stream`` to ``loop`` with labels ``delay`` late (stream/data/label_delay.py, drawn
    with the stream's seed); finish the loop and return the serving counts."""
    delays = label_delays(delay, len(stream), stream.header.seed)
    # The window holds every request a label is still due for: nothing expires in a replay.
    serving = ServingLoop(loop, LabelJoin(max_pending=max(len(stream), 1), max_bytes=1 << 62))
    ids, y, level = np.asarray(stream.id), np.asarray(stream.y), np.asarray(stream.level)
    task = np.asarray(stream.task)
    requests: list[int] = []

    def serve() -> None:
        rows = np.array(requests)
        serving.request(ids[rows], _inputs(stream, dataset, rows), now=0.0, task=task[rows])
        requests.clear()

    for kind, i in delayed_order(len(stream), delays):
        if kind == "request":
            requests.append(i)
            continue
        if requests:
            serve()
        serving.label(ids[i : i + 1], y[i : i + 1], level[i : i + 1], now=0.0)
    if requests:
        serve()
    serving.flush()
    loop.finish()
    return {
        "label_delay": delay,
        "predictions": serving.predictions,
        "expired": serving.expired,
    }


def _inputs(stream: RecordedStream, dataset: Dataset | None, rows: np.ndarray) -> np.ndarray:
    if stream.x is not None:
        return as_float_tensor(np.asarray(stream.x[rows])).numpy()
    assert dataset is not None
    return as_float_tensor(dataset.X_train[np.asarray(stream.row[rows])]).numpy()
