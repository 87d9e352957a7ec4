"""Prediction requests waiting for their labels: a join window bounded by count, age and bytes.

A served request with an ``id`` is kept here with its input and the prediction that was served,
per level, until a label message ``{id, y, level}`` takes it out (the sample is then learned and
scored against the prediction that was actually served). The window is bounded three ways, all
configurable: at most ``max_pending`` requests, none older than ``max_age_seconds``, and their
inputs together at most ``max_bytes``; whatever falls out, oldest first, is *expired*: its label
will find nothing, and it is counted, never learned.

The whole window is JSON (inputs as base64 float32), so a daemon checkpoint carries it next to
the source offsets, within ``max_bytes``. A checkpoint is outside bytes: a restored window is
checked request by request (:func:`decode_input`; with a problem, the input shape and the served
classes too) and replaces the window only whole, so a damaged one changes nothing.

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
import binascii
import math
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.data.finite import all_finite
from stream.engine.restored_values import restored_float, restored_integer

# Elements of one input a checkpoint may hold (what a wire message may carry is bounded the
# same way, by messages.max_bytes): a shape whose product is larger is refused before decoding.
MAX_INPUT_VALUES = 1 << 26


def encode_input(x: np.ndarray) -> dict[str, Any]:
    """A float32 input as JSON: its bytes in base64 and its shape."""
    return {
        "x": base64.b64encode(np.asarray(x, "<f4").tobytes()).decode(),
        "shape": list(x.shape),
    }


def decode_input(
    entry: dict[str, Any], input_shape: Sequence[int] | None, where: str
) -> np.ndarray:
    """The input of :func:`encode_input`'s ``entry``, checked (``ValueError`` naming ``where``):
    strict base64, a shape of positive sizes (``input_shape`` when given) whose values are
    exactly the decoded bytes, every value finite."""
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 8
        or not all(type(s) is int and s > 0 for s in shape)
        or math.prod(shape) > MAX_INPUT_VALUES
    ):
        raise ValueError(f"{where}: the input's shape {str(shape)[:80]} is not a shape")
    if input_shape is not None and tuple(shape) != tuple(input_shape):
        raise ValueError(
            f"{where}: an input of shape {tuple(shape)}, this problem's is {tuple(input_shape)}"
        )
    size = 4 * math.prod(shape)
    encoded = entry.get("x")
    if not isinstance(encoded, str) or len(encoded) != 4 * ((size + 2) // 3):
        raise ValueError(f"{where}: the input is not base64 of {size // 4} float32")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the input is not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"{where}: {len(raw)} input bytes for shape {tuple(shape)}")
    x = np.frombuffer(raw, "<f4").reshape(shape).astype(np.float32)
    if not all_finite(x):
        raise ValueError(f"{where}: the input holds a NaN or an infinity")
    return x


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
                    **encode_input(p.x),
                    "predicted": p.predicted,
                    "served_at": p.served_at,
                    "task": p.task,
                    "partition": p.partition,
                }
                for id, p in self.pending.items()
            ]
        }

    def load_state_dict(
        self,
        state: dict[str, Any] | None,
        input_shape: Sequence[int] | None = None,
        num_classes: Sequence[int] | None = None,
    ) -> None:
        """The window of ``state``, as it was (:meth:`shrink` fits it into smaller bounds).

        Every request is checked first (``ValueError`` naming the request and what is wrong;
        the window is then unchanged): its id >= 0, its input (:func:`decode_input`; of
        ``input_shape`` when given), a finite time, a task and a partition >= -1, and a served
        class >= -1 per level (with ``num_classes``: one per level, each below its level's
        count). A label joined to it is learned as checked on arrival."""
        requests = state.get("requests") if isinstance(state, dict) else None
        if not isinstance(requests, list):
            raise ValueError("label join window: no list of requests")
        pending: OrderedDict[int, Pending] = OrderedDict()
        for i, request in enumerate(requests):
            where = f"label join window, request {i}"
            if not isinstance(request, dict):
                raise ValueError(f"{where}: not an object")
            id = restored_integer(request.get("id"), where, "id", 0)
            x = decode_input(request, input_shape, where)
            predicted = request.get("predicted")
            if not isinstance(predicted, list) or not predicted:
                raise ValueError(f"{where}: no served class per level")
            classes = [restored_integer(c, where, "served class", -1) for c in predicted]
            if num_classes is not None and (
                len(classes) != len(num_classes)
                or any(c >= k for c, k in zip(classes, num_classes, strict=True))
            ):
                raise ValueError(
                    f"{where}: served classes {classes[:8]} do not fit the levels' "
                    f"{list(num_classes)} classes"
                )
            served_at = restored_float(request.get("served_at"), where, "served_at")
            task = restored_integer(request.get("task"), where, "task", -1)
            # checkpoints before scale-out serving kept no partition
            partition = restored_integer(request.get("partition", -1), where, "partition", -1)
            pending.pop(id, None)  # merged windows may repeat an id: the later stands
            pending[id] = Pending(x, classes, served_at, task, partition)
        self.pending = pending
        self.bytes = sum(p.x.nbytes for p in pending.values())
