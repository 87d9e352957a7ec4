"""Prediction requests waiting for their labels: a join window bounded by count, age and bytes.

A served request with an ``id`` is kept here with its input and the prediction that was served,
per level, until a label message ``{id, y, level}`` takes it out (the sample is then learned and
scored against the prediction that was actually served). The window is bounded three ways, all
configurable: at most ``max_pending`` requests, none older than ``max_age_seconds``, and their
inputs together at most ``max_bytes``; whatever falls out, oldest first, is *expired*: its label
will find nothing, and it is counted, never learned.

The whole window is JSON (inputs as base64 float32), so a daemon checkpoint carries it next to
the source offsets, within ``max_bytes``.

>>> join = LabelJoin(max_pending=2)
>>> for i in range(3):
...     join.add(i, np.zeros(2, np.float32), [1], served_at=float(i))
[]
[]
[0]
>>> join.take(0) is None, join.take(2).predicted
(True, [1])
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Pending:
    """One served request: its input, the class served per level (-1: none), when, the task
    its request named (-1: none), and the Kafka partition it came from (-1: unknown; a
    scaled-out daemon hands pending requests on with their partitions)."""

    x: np.ndarray
    predicted: list[int]
    served_at: float
    task: int = -1
    partition: int = -1


class LabelJoin:
    """Pending requests by id, oldest first."""

    def __init__(
        self,
        max_pending: int = 100_000,
        max_age_seconds: float | None = None,
        max_bytes: int = 256 << 20,
    ) -> None:
        if max_pending <= 0 or max_bytes <= 0:
            raise ValueError("max_pending and max_bytes must be positive")
        if max_age_seconds is not None and max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive (or None: no age limit)")
        self.max_pending = max_pending
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.pending: OrderedDict[int, Pending] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.pending)

    def add(
        self,
        id: int,
        x: np.ndarray,
        predicted: list[int],
        served_at: float,
        task: int = -1,
        partition: int = -1,
    ) -> list[int]:
        """Keep request ``id``; the ids that expired to make room (a repeated id replaces the
        earlier request, whose label can no longer be told apart)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        expired = []
        old = self.pending.pop(id, None)
        if old is not None:
            self.bytes -= old.x.nbytes
            expired.append(id)
        if x.nbytes > self.max_bytes:
            return [*expired, id]  # could never be held: expired at once
        self.pending[id] = Pending(x, list(predicted), served_at, task, partition)
        self.bytes += x.nbytes
        return expired + self.shrink()

    def shrink(self) -> list[int]:
        """Drop the oldest requests while the window holds more than its bounds allow (after
        :meth:`add`, or a restore into smaller bounds or from several windows); their ids."""
        expired = []
        while len(self.pending) > self.max_pending or self.bytes > self.max_bytes:
            expired.append(self._drop_oldest())
        return expired

    def take(self, id: int) -> Pending | None:
        """Request ``id`` for its label, or None when it expired or was never served."""
        found = self.pending.pop(id, None)
        if found is not None:
            self.bytes -= found.x.nbytes
        return found

    def expire(self, now: float) -> list[int]:
        """Drop the requests older than ``max_age_seconds`` at time ``now``; their ids."""
        if self.max_age_seconds is None:
            return []
        limit = now - self.max_age_seconds
        expired = []
        while self.pending and next(iter(self.pending.values())).served_at < limit:
            expired.append(self._drop_oldest())
        return expired

    def keep_partitions(self, partitions: Collection[int], keep_unknown: bool = False) -> int:
        """Keep only the requests from ``partitions`` (a scaled-out rank, after its partitions
        were assigned: the others' labels go to other ranks), and with ``keep_unknown`` those
        of partition -1; how many were handed on. Not expired: another rank holds them."""
        owned = set(partitions) | ({-1} if keep_unknown else set())
        gone = [id for id, p in self.pending.items() if p.partition not in owned]
        for id in gone:
            self.take(id)
        return len(gone)

    def _drop_oldest(self) -> int:
        id, dropped = self.pending.popitem(last=False)
        self.bytes -= dropped.x.nbytes
        return id

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every pending request, as JSON."""
        return {
            "requests": [
                {
                    "id": id,
                    "x": base64.b64encode(p.x.astype("<f4").tobytes()).decode(),
                    "shape": list(p.x.shape),
                    "predicted": p.predicted,
                    "served_at": p.served_at,
                    "task": p.task,
                    "partition": p.partition,
                }
                for id, p in self.pending.items()
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The window of ``state``, as it was (:meth:`shrink` fits it into smaller bounds)."""
        self.pending.clear()
        self.bytes = 0
        for request in state["requests"]:
            x = np.frombuffer(base64.b64decode(request["x"]), "<f4").reshape(request["shape"])
            self.take(int(request["id"]))  # merged windows may repeat an id: the later stands
            self.pending[int(request["id"])] = Pending(
                x.astype(np.float32),
                [int(c) for c in request["predicted"]],
                float(request["served_at"]),
                int(request["task"]),
                int(request.get("partition", -1)),  # checkpoints before scale-out serving
            )
            self.bytes += x.nbytes
