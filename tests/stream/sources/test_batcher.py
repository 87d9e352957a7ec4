"""Decoded samples to micro-batches: order kept, size bounded, cut at task changes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.sources import batcher
from stream.sources.batcher import micro_batches, micro_batches_with_origins
from stream.sources.wire import Samples


def _samples(ids, task):
    n = len(ids)
    return Samples(
        x=np.asarray(ids, np.float32)[:, None],
        y=np.zeros(n, np.int64),
        level=np.zeros(n, np.int64),
        task=np.asarray(task, np.int64),
        ids=np.asarray(ids, np.int64),
    )


def test_batches_keep_order_and_size_and_cut_at_task_changes():
    messages = [
        _samples([0, 1, 2], [0, 0, 0]),
        _samples([3, 4, 5, 6], [0, 1, 1, 1]),
        _samples([7], [1]),
    ]
    batches = list(micro_batches(messages, 2))
    assert [b.ids.tolist() for b in batches] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [b.task.tolist() for b in batches] == [[0, 0], [0, 0], [1, 1], [1, 1]]
    assert [b.x[:, 0].tolist() for b in batches][1] == [2.0, 3.0]


def test_samples_without_a_task_make_batches_without_one():
    batches = list(micro_batches([_samples([0, 1], [-1, -1]), _samples([2], [4])], 8))
    assert next(b.task for b in batches) is None and batches[1].task.tolist() == [4]


def test_each_sample_carries_the_partition_and_offset_of_its_message():
    messages = [_samples([0, 1, 2], [0, 0, 0]), _samples([3], [1]), _samples([4, 5], [1, 1])]
    cut = list(micro_batches_with_origins(messages, [(0, 7), (2, 3), (0, 8)], 2))
    assert [b.ids.tolist() for b, _ in cut] == [b.ids.tolist() for b in micro_batches(messages, 2)]
    assert [(p.tolist(), o.tolist()) for _, (p, o) in cut] == [
        ([0, 0], [7, 7]),
        ([0], [7]),
        ([2, 0], [3, 8]),
        ([0], [8]),
    ]


def test_nothing_in_nothing_out():
    assert list(micro_batches([], 4)) == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.integers(-1, 2), min_size=1, max_size=6), min_size=1, max_size=5),
    st.integers(1, 5),
)
def test_batches_are_the_samples_in_order_cut_by_size_and_task(tasks, batch_size):
    messages, next_id = [], 0
    for task in tasks:
        messages.append(_samples(list(range(next_id, next_id + len(task))), sorted(task)))
        next_id += len(task)
    batches = list(micro_batches(messages, batch_size))
    ids = np.concatenate([m.ids for m in messages])
    assert np.concatenate([b.ids for b in batches]).tolist() == ids.tolist()
    assert np.concatenate([b.x[:, 0] for b in batches]).tolist() == ids.astype(float).tolist()
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert batch.task is None or len(set(batch.task.tolist())) == 1
        # the task the loop reads: none where messages gave none, else the samples' one
        assert (
            batch.task_id
            == batch.first_task()
            == (None if batch.task is None else batch.task.tolist()[0])
        )


def test_pending_samples_gather_a_polls_batches_one_at_a_time(monkeypatch):
    """A large poll is never copied whole: cut gathers each batch's inputs when it is taken
    (one ahead, to know which is the last), and keeps a short last batch back."""
    gathered = []
    real = batcher._gather
    monkeypatch.setattr(batcher, "_gather", lambda *a: gathered.append(a[2]) or real(*a))
    rng = np.random.default_rng(0)
    message = Samples(
        rng.normal(size=(18, 2)).astype(np.float32), np.zeros(18, np.int64),
        np.zeros(18, np.int64), np.full(18, -1), np.full(18, -1),
    )  # fmt: skip
    pending = batcher.PendingSamples(4)
    batches = pending.cut([message], [(0, 7)])
    next(batches)
    assert len(gathered) == 2  # the first batch and the one after it, not all five
    assert [len(b) for b, _ in batches] == [4, 4, 4]
    assert len(pending) == 2 and pending.origins == [(0, 7)]
