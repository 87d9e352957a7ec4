"""The one micro-batch cutting rule (stream/sources/cuts.py), and both sources following it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.data.stream_file import RecordedStream, StreamHeader
from stream.sources.batcher import micro_batches
from stream.sources.cuts import batch_starts
from stream.sources.file_source import task_batches
from stream.sources.wire import Samples


def test_cut_at_task_changes_then_by_size():
    task = np.array([0, 0, 0, 1, 1, 1, 1, 1, 3])
    assert batch_starts(task, 2) == [0, 2, 3, 5, 7, 8]
    assert batch_starts(task, 2, start=4) == [4, 6, 8]  # a resumed stream starts mid-task
    assert batch_starts(task[:0], 2) == []


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="batch size must be positive, got 0"):
        batch_starts(np.zeros(3, dtype=np.int64), 0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-1, 3), max_size=40), st.integers(1, 6), st.integers(0, 45))
def test_batches_tile_the_events_within_a_task_and_the_size(task, batch_size, start):
    task = np.array(sorted(task), dtype=np.int64)
    starts = batch_starts(task, batch_size, start)
    ends = [*starts[1:], len(task)][: len(starts)]
    covered = [i for lo, hi in zip(starts, ends, strict=True) for i in range(lo, hi)]
    assert covered == list(range(min(start, len(task)), len(task)))
    for lo, hi in zip(starts, ends, strict=True):
        assert 1 <= hi - lo <= batch_size and len(set(task[lo:hi].tolist())) == 1


def test_a_file_and_kafka_cut_the_same_stream_the_same_way():
    task = np.array([0] * 7 + [1] * 2 + [2] * 5, dtype=np.int64)
    n = len(task)
    ids = np.arange(n, dtype=np.int64)
    x = ids.astype(np.float32)[:, None]
    zeros = np.zeros(n, dtype=np.int64)
    header = StreamHeader(
        dataset="digits",
        schedule="disjoint",
        seed=0,
        num_samples=n,
        num_tasks=3,
        num_classes=[10],
        level_names=["label"],
        inline=True,
    )
    recorded = RecordedStream(header, id=ids, row=ids, y=zeros, level=zeros, task=task, x=x)
    from_file = [b.ids.tolist() for b in task_batches(recorded, None, 3)]
    messages = [
        Samples(x=x[lo:hi], y=zeros[lo:hi], level=zeros[lo:hi], task=task[lo:hi], ids=ids[lo:hi])
        for lo, hi in ((0, 4), (4, 5), (5, n))  # polls cut anywhere
    ]
    from_kafka = [b.ids.tolist() for b in micro_batches(messages, 3)]
    assert from_file == from_kafka == [[0, 1, 2], [3, 4, 5], [6], [7, 8], [9, 10, 11], [12, 13]]
