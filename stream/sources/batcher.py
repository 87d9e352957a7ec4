"""Decoded messages to the event loop's micro-batches.

The samples of one poll are taken in order and cut into batches of at most ``batch_size``,
never spanning a task change, by the rule the recorded-stream source follows too
(:func:`stream.sources.cuts.batch_starts`), so a micro-batch message and a run of single-sample
JSON messages feed the learner the same way. The daemon keeps a short last batch back for the
next poll (:class:`PendingSamples`), so the cut does not depend on where polls end. Inputs are
gathered one batch at a time, so a large poll is never copied whole.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from stream.engine.batch import Batch, Origins
from stream.sources.cuts import batch_starts
from stream.sources.wire import Samples, encode_binary


def micro_batches(samples: list[Samples], batch_size: int) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` samples; ``task`` is None where messages gave none."""
    if not samples:
        return
    y = np.concatenate([s.y for s in samples])
    level = np.concatenate([s.level for s in samples])
    task = np.concatenate([s.task for s in samples])
    ids = np.concatenate([s.ids for s in samples])
    inputs = [s.x for s in samples]
    starts = np.cumsum([0] + [len(s) for s in samples])
    for lo, hi in itertools.pairwise([*batch_starts(task, batch_size), len(y)]):
        yield Batch(
            x=torch.from_numpy(_gather(inputs, starts, lo, hi)),
            y=torch.from_numpy(y[lo:hi]),
            level=torch.from_numpy(level[lo:hi]),
            task=None if task[lo] < 0 else torch.from_numpy(task[lo:hi]),
            task_id=None if task[lo] < 0 else int(task[lo]),
            ids=torch.from_numpy(ids[lo:hi]),
            # the decoder refused every sample that does not fit the problem
            validated=True,
        )


def micro_batches_with_origins(
    samples: list[Samples], origins: Sequence[tuple[int, int]], batch_size: int
) -> Iterator[tuple[Batch, Origins]]:
    """:func:`micro_batches`, each with its samples' origins, given one ``(partition, offset)``
    per message of ``samples``."""
    counts = [len(s) for s in samples]
    partition_of = np.repeat([p for p, _ in origins], counts).astype(np.int64)
    offset_of = np.repeat([o for _, o in origins], counts).astype(np.int64)
    start = 0
    for batch in micro_batches(samples, batch_size):
        stop = start + len(batch)
        yield batch, (partition_of[start:stop], offset_of[start:stop])
        start = stop


def _gather(inputs: list[np.ndarray], starts: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of the inputs laid end to end, as one new (writable) array."""
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    last = int(np.searchsorted(starts, hi, side="left"))
    pieces = [
        inputs[i][max(lo - starts[i], 0) : min(hi, starts[i + 1]) - starts[i]]
        for i in range(first, last)
    ]
    return np.concatenate(pieces)


# Pending samples a checkpoint may hold, whatever batch size wrote it (a bound on what a restore
# reads, not on the batch size).
MAX_RESTORED = 1 << 16


class PendingSamples:
    """Samples read but not yet in a complete micro-batch, carried from one poll to the next.

    :meth:`cut` returns the micro-batches of what is pending followed by new messages, keeping
    the last batch back while it is short: the next poll's samples may complete it, or start a
    new task and so end it. Batches then depend only on the order of the samples, never on
    where the polls ended, so a learner whose update depends on the cut (a gradient step) learns
    from the daemon what it learns from a replay of the same stream. What is kept is the short
    batch as gathered, one block of samples with each sample's (partition, offset), so a poll
    does not cut a run of many small messages again; a checkpoint carries it (:meth:`state_dict`),
    since its offsets count as read.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.samples: Samples | None = None
        self.partition = np.empty(0, np.int64)  # each pending sample's message
        self.offset = np.empty(0, np.int64)

    def __len__(self) -> int:
        return 0 if self.samples is None else len(self.samples)

    @property
    def origins(self) -> list[tuple[int, int]]:
        """The messages the pending samples came from, in order."""
        return [(int(p), int(o)) for p, o, _ in self._runs()]

    def cut(
        self, samples: list[Samples], origins: Sequence[tuple[int, int]], keep_short: bool = True
    ) -> Iterator[tuple[Batch, Origins]]:
        """The micro-batches of the pending samples and then ``samples`` (one origin per
        message), gathered one at a time as they are asked for; with ``keep_short``, a short
        last batch stays pending instead (once the batches before it were taken)."""
        counts = [len(m) for m in samples]
        messages = ([] if self.samples is None else [self.samples]) + list(samples)
        partition_of = np.concatenate(
            [self.partition, np.repeat([p for p, _ in origins], counts).astype(np.int64)]
        )
        offset_of = np.concatenate(
            [self.offset, np.repeat([o for _, o in origins], counts).astype(np.int64)]
        )
        self.samples = None
        self.partition = self.offset = np.empty(0, np.int64)
        batches = micro_batches(messages, self.batch_size)
        last = next(batches, None)
        if last is None:
            return
        start = 0
        for batch in batches:  # one batch behind: only the last may stay pending
            stop = start + len(last)
            yield last, (partition_of[start:stop], offset_of[start:stop])
            start, last = stop, batch
        stop = start + len(last)
        if not keep_short or len(last) == self.batch_size:
            yield last, (partition_of[start:stop], offset_of[start:stop])
            return
        n = len(last)
        self.samples = Samples(
            last.x.numpy(),
            last.y.numpy(),
            last.level.numpy(),
            np.full(n, -1) if last.task is None else last.task.numpy(),
            np.full(n, -1) if last.ids is None else last.ids.numpy(),
        )
        self.partition, self.offset = partition_of[start:stop], offset_of[start:stop]

    def _runs(self) -> list[tuple[int, int, slice]]:
        """(partition, offset, rows) of each run of pending samples from one message."""
        if not len(self):
            return []
        change = (self.partition[1:] != self.partition[:-1]) | (self.offset[1:] != self.offset[:-1])
        bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(self)]
        return [
            (int(self.partition[lo]), int(self.offset[lo]), slice(lo, hi))
            for lo, hi in itertools.pairwise(bounds)
        ]

    def state_dict(self) -> list[dict[str, Any]]:
        """The pending samples as JSON: each message's run as a binary message (base64)."""
        entries = []
        for partition, offset, rows in self._runs():
            assert self.samples is not None
            m = self.samples
            task, ids = m.task[rows], m.ids[rows]
            message = encode_binary(
                m.x[rows],
                m.y[rows],
                m.level[rows],
                task if (task >= 0).all() else None,
                ids if (ids >= 0).all() else None,
            )
            entries.append(
                {
                    "partition": partition,
                    "offset": offset,
                    "message": base64.b64encode(message).decode(),
                }
            )
        return entries

    def load_state_dict(
        self, state: list[dict[str, Any]], decode: Callable[[bytes], object]
    ) -> None:
        """Pending samples from a checkpoint, each message checked again by ``decode`` (a
        decoder's; :class:`~stream.sources.wire.InvalidMessage` or ``ValueError`` when they are
        not what :meth:`state_dict` writes)."""
        # written with this batch size or another (loop.batch_size may change between runs)
        limit = max(self.batch_size, MAX_RESTORED)
        if not isinstance(state, list) or len(state) > limit:
            raise ValueError(f"pending samples: not a list of at most {limit} messages")
        messages, origins = [], []
        for entry in state:
            message = decode(base64.b64decode(entry["message"], validate=True))
            if not isinstance(message, Samples):
                raise ValueError("pending samples: a message that is not labelled samples")
            messages.append(message)
            origins.append((int(entry["partition"]), int(entry["offset"])))
        counts = [len(m) for m in messages]
        if sum(counts) > limit:
            raise ValueError(f"pending samples: more than {limit}")
        self.samples = (
            None
            if not messages
            else Samples(*(np.concatenate([getattr(m, f) for m in messages]) for f in _FIELDS))
        )
        self.partition = np.repeat([p for p, _ in origins], counts).astype(np.int64)
        self.offset = np.repeat([o for _, o in origins], counts).astype(np.int64)


_FIELDS = ("x", "y", "level", "task", "ids")
