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
    from the daemon what it learns from a replay of the same stream. Messages are kept as
    ``(samples, (partition, offset))`` slices, at most ``batch_size - 1`` samples in all, and a
    checkpoint carries them (:meth:`state_dict`), since their offsets count as read.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.messages: list[Samples] = []
        self.origins: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return sum(len(m) for m in self.messages)

    def cut(
        self, samples: list[Samples], origins: Sequence[tuple[int, int]], keep_short: bool = True
    ) -> Iterator[tuple[Batch, Origins]]:
        """The micro-batches of the pending samples and then ``samples`` (one origin per
        message), gathered one at a time as they are asked for; with ``keep_short``, a short
        last batch stays pending instead (once the batches before it were taken)."""
        messages = [*self.messages, *samples]
        at = [*self.origins, *origins]
        self.messages, self.origins = [], []
        batches = micro_batches_with_origins(messages, at, self.batch_size)
        last = next(batches, None)
        if last is None:
            return
        for batch in batches:  # one batch behind: only the last may stay pending
            yield last
            last = batch
        if not keep_short or len(last[0]) == self.batch_size:
            yield last
            return
        short = len(last[0])
        while short:  # the last ``short`` samples, as slices of their messages
            message, origin = messages.pop(), at.pop()
            take = min(short, len(message))
            self.messages.insert(0, _tail(message, take))
            self.origins.insert(0, origin)
            short -= take

    def state_dict(self) -> list[dict[str, Any]]:
        """The pending samples as JSON: each message slice as a binary message (base64)."""
        return [
            {
                "partition": partition,
                "offset": offset,
                "message": base64.b64encode(
                    encode_binary(
                        m.x,
                        m.y,
                        m.level,
                        m.task if (m.task >= 0).all() else None,
                        m.ids if (m.ids >= 0).all() else None,
                    )
                ).decode(),
            }
            for m, (partition, offset) in zip(self.messages, self.origins, strict=True)
        ]

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
        if sum(len(m) for m in messages) > limit:
            raise ValueError(f"pending samples: more than {limit}")
        self.messages, self.origins = messages, origins


def _tail(samples: Samples, count: int) -> Samples:
    """The last ``count`` samples of ``samples``."""
    at = slice(len(samples) - count, None)
    return Samples(
        samples.x[at], samples.y[at], samples.level[at], samples.task[at], samples.ids[at]
    )
