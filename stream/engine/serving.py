"""Serving while learning: prediction requests, labels that arrive later, and labelled samples.

One :class:`ServingLoop` wraps the :class:`~stream.engine.event_loop.EventLoop` and takes the
stream's messages in arrival order:

- a **request** (a sample without a label) is predicted by the model as it is now, with the
  classes the stream has not shown masked out, and, when it has an id, kept in the
  :class:`~stream.engine.label_join.LabelJoin` window with the prediction served;
- a **label** ``{id, y, level}`` takes its request out of the window and queues the sample to
  be learned; prequential accuracy then scores the prediction that was *served*, which is the
  honest online accuracy under label delay;
- a **labelled sample** is predicted then learned, as without serving.

Queued samples are learned in micro-batches of at most ``batch_size``, never across a task
change, and always before the next request or labelled sample is handled, so every prediction
sees every label that arrived before it. Given the same messages in the same order and the same
calls to :meth:`ServingLoop.flush`, the result is the same: the daemon (stream/daemon/serve.py)
flushes only where this loop would, or when a poll comes back empty, and a checkpoint carries
the queue (:meth:`state_dict`), so a replay with delayed labels (stream/runs/delayed_labels.py)
of the same order learns the same model and scores the same accuracy.

``predict`` may be called from another thread (the HTTP ``/predict`` endpoint): a lock keeps a
prediction from running inside a learner update.

Each batch is learned by ``process(batch, served, origins)``: by default the event loop's
:meth:`~stream.engine.event_loop.EventLoop.process`; the daemon passes its learner guard
(stream/engine/guard.py), which undoes a batch the learner fails on. ``origins``
(:data:`~stream.engine.batch.Origins`) says where each sample came from (the daemon: the Kafka
partition and offset of the labelled sample or of the label), for the guard to name a rejected
batch's messages.

>>> import torch
>>> from learners.base import Problem
>>> from learners.registry import create
>>> from stream.engine.event_loop import EventLoop
>>> problem = Problem(input_shape=(2,), num_classes=(2,))
>>> serving = ServingLoop(EventLoop(create("nmc", problem), problem))
>>> x = np.eye(2, dtype=np.float32)
>>> serving.request(np.array([7, 8]), x, now=0.0).predicted.tolist()  # nothing learned yet
[[-1], [-1]]
>>> serving.label(np.array([7, 8]), np.array([0, 1]), np.array([0, 0]), now=1.0).delays
[1.0, 1.0]
>>> serving.flush(); serving.request(np.array([9]), x[1:], now=2.0).predicted.tolist()
[[1]]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stream.engine.batch import Batch, Origins
from stream.engine.event_loop import EventLoop
from stream.engine.label_join import LabelJoin, decode_input, encode_input
from stream.engine.restored_values import restored_integer
from stream.engine.validation import outside_label_space

# Joined samples a checkpoint's queue may hold, whatever batch size wrote it.
MAX_RESTORED_QUEUE = 1 << 16

# Learns one batch: (batch, served classes or None, where its samples came from).
Process = Callable[[Batch, np.ndarray | None, Origins], None]


@dataclass
class Prediction:
    """Predictions for ``n`` samples: masked scores per level (``[n, classes]``, ``-inf`` for a
    class not predictable), the class per level (``[n, levels]``, -1 where none), and the
    number of samples the model had learned."""

    scores: list[np.ndarray]
    predicted: np.ndarray
    position: int


@dataclass
class Served:
    """A prediction served earlier: the class per level and when."""

    predicted: list[int]
    served_at: float


@dataclass
class Joined:
    """What one label message did: the label delay of each joined request (seconds), and the
    ids that matched no pending request (expired, or never served)."""

    delays: list[float] = field(default_factory=list)
    unmatched: list[int] = field(default_factory=list)


class ServingLoop:
    """Requests, delayed labels and labelled samples, in arrival order, through one loop."""

    def __init__(
        self, loop: EventLoop, join: LabelJoin | None = None, process: Process | None = None
    ) -> None:
        self.loop = loop
        self.join = join if join is not None else LabelJoin()
        self.process: Process = process or (lambda batch, served, _: loop.process(batch, served))
        self.batch_size = loop.config.batch_size
        self.lock = threading.Lock()
        self.predictions = 0
        self.expired = 0
        self.unmatched = 0
        # Joined samples waiting to be learned: (x, y, level, task, served class, partition,
        # offset).
        self._queue: list[tuple[np.ndarray, int, int, int, int, int, int]] = []

    # -- predicting -----------------------------------------------------------------------

    def predict(self, x: np.ndarray) -> Prediction:
        """Predict ``x`` (``[n, *input_shape]`` float32) with the model as it is; no state
        changes (safe from another thread)."""
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        levels = self.loop.problem.num_levels
        with self.lock:
            position = self.loop.samples_seen
            scores = [self.loop.masked_scores(tensor, level) for level in range(levels)]
        predicted = np.empty((len(x), levels), dtype=np.int64)
        for level, level_scores in enumerate(scores):
            best = level_scores.argmax(axis=1)
            answered = level_scores[np.arange(len(x)), best] > -np.inf
            predicted[:, level] = np.where(answered, best, -1)
        return Prediction(scores, predicted, position)

    def request(
        self,
        ids: np.ndarray,
        x: np.ndarray,
        now: float,
        task: np.ndarray | None = None,
        served: Sequence[Served | None] | None = None,
        partition: int = -1,
    ) -> Prediction:
        """Serve requests: learn what is queued, predict, keep those with an id (>= 0) for their
        labels. Requests that push older ones out of the window count in ``expired``.

        ``served`` gives, for requests answered before a crash, the classes and time they were
        served then: those are kept for their labels instead of this prediction. ``partition``:
        the Kafka partition of the requests' message, kept with them (-1: none)."""
        self.flush()
        prediction = self.predict(x)
        self.predictions += len(x)
        tasks = np.full(len(x), -1) if task is None else task
        for i, id in enumerate(ids.tolist()):
            earlier = None if served is None else served[i]
            if earlier is not None:
                prediction.predicted[i] = earlier.predicted
            if id >= 0:
                dropped = self.join.add(
                    id,
                    x[i],
                    prediction.predicted[i].tolist(),
                    now if earlier is None else earlier.served_at,
                    int(tasks[i]),
                    partition,
                )
                self.expired += len(dropped)
        return prediction

    # -- learning -------------------------------------------------------------------------

    def label(
        self,
        ids: np.ndarray,
        y: np.ndarray,
        level: np.ndarray,
        now: float,
        origin: tuple[int, int] = (-1, -1),
    ) -> Joined:
        """Join labels to their requests and queue the samples for learning (``origin``: the
        partition and offset of the labels' message, handed to ``process`` with each sample)."""
        joined = Joined()
        for id, label, lvl in zip(ids.tolist(), y.tolist(), level.tolist(), strict=True):
            pending = self.join.take(id)
            if pending is None:
                joined.unmatched.append(id)
                continue
            joined.delays.append(now - pending.served_at)
            if self._queue and self._queue[-1][3] != pending.task:
                self.flush()  # a batch never spans a task change
            self._queue.append(
                (pending.x, label, lvl, pending.task, pending.predicted[lvl], *origin)
            )
            if len(self._queue) >= self.batch_size:
                self.flush()
        self.unmatched += len(joined.unmatched)
        return joined

    def learn(self, batch: Batch, origins: Origins | None = None) -> None:
        """Predict then learn one batch of labelled samples (after what is queued);
        ``origins``: where its samples came from, for ``process`` (None: unknown)."""
        self.flush()
        if origins is None:
            unknown = np.full(len(batch), -1, np.int64)
            origins = (unknown, unknown)
        with self.lock:
            self.process(batch, None, origins)

    def flush(self) -> None:
        """Learn every queued joined sample."""
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self.batch_size):
            rows = queue[start : start + self.batch_size]
            x = np.stack([r[0] for r in rows])
            y, level, task, served, partition, offset = (
                np.array([r[i] for r in rows], dtype=np.int64) for i in range(1, 7)
            )
            batch = Batch(
                x=torch.from_numpy(x),
                y=torch.from_numpy(y),
                level=torch.from_numpy(level),
                task=None if task[0] < 0 else torch.from_numpy(task),
                validated=True,  # the request and the label were each checked on arrival
            )
            with self.lock:
                self.process(batch, served, (partition, offset))

    def expire(self, now: float) -> int:
        """Drop requests older than the join window's age; how many."""
        dropped = len(self.join.expire(now))
        self.expired += dropped
        return dropped

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The window, the joined samples queued (fewer than a micro-batch) and the counters,
        as JSON."""
        return {
            "join": self.join.state_dict(),
            "queue": [
                {**encode_input(x), "joined": [y, level, task, served, partition, offset]}
                for x, y, level, task, served, partition, offset in self._queue
            ],
            "predictions": self.predictions,
            "expired": self.expired,
            "unmatched": self.unmatched,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The window and counters of ``state``; requests beyond this window's bounds (made
        smaller since, or windows merged) expire, oldest first. Everything is checked before
        anything changes (``ValueError``)."""
        problem = self.loop.problem
        counters = {
            name: restored_integer(state.get(name), "serving state", name, 0)
            for name in ("predictions", "expired", "unmatched")
        }
        queue = self._queue_from(state.get("queue", []))
        self.join.load_state_dict(state.get("join"), problem.input_shape, problem.num_classes)
        self._queue = queue
        self.predictions = counters["predictions"]
        self.expired = counters["expired"] + len(self.join.shrink())
        self.unmatched = counters["unmatched"]

    def _queue_from(
        self, queue: list[dict[str, Any]]
    ) -> list[tuple[np.ndarray, int, int, int, int, int, int]]:
        """A checkpoint's queued samples, checked as a batch is (``ValueError`` if not)."""
        problem = self.loop.problem
        limit = max(self.batch_size, MAX_RESTORED_QUEUE)  # any batch size may have written it
        if not isinstance(queue, list) or len(queue) > limit:
            raise ValueError(f"serving state: not a queue of at most {limit} samples")
        restored = []
        for i, entry in enumerate(queue):
            where = f"serving state, queued sample {i}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: not an object")
            x = decode_input(entry, problem.input_shape, where)
            joined = entry.get("joined")
            if not isinstance(joined, list) or len(joined) != 6:
                raise ValueError(f"{where}: not the six numbers of a joined sample")
            names = ("label", "level", "task", "served class", "partition", "offset")
            y, level, task, served, partition, offset = (
                restored_integer(v, where, name, 0 if name in ("label", "level") else -1)
                for v, name in zip(joined, names, strict=True)
            )
            bad = outside_label_space(
                np.array([y]), np.array([level]), np.asarray(problem.num_classes)
            )
            if bad is not None:
                raise ValueError(f"{where}: {bad[2]}")
            if served >= problem.num_classes[level]:
                raise ValueError(f"{where}: served class {served} outside level {level}'s")
            restored.append((x, y, level, task, served, partition, offset))
        return restored

    def keep_partitions(self, partitions: Collection[int], keep_unknown: bool = False) -> None:
        """Keep only the pending requests from ``partitions`` (a scaled-out rank's, once
        assigned), and with ``keep_unknown`` those of no known partition; the window's bounds
        then apply to what is left."""
        self.join.keep_partitions(partitions, keep_unknown)
        self.expired += len(self.join.shrink())
