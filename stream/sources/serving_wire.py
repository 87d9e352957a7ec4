"""Prediction requests and late labels on the wire, next to labelled samples (docs/serving.md).

With ``[predictions]`` configured, a message on the daemon's topic is one of three kinds:

- a labelled sample or micro-batch, as in ``docs/wire-format.md`` (``x`` and ``y``);
- a **prediction request**: JSON with ``x`` and no ``y`` (``{"id": 17, "x": [...]}``; ``task``
  optional), or a binary micro-batch whose flags carry :data:`FLAG_REQUEST` and which then has
  no label and no level arrays (ids are required there);
- a **label** for an earlier request: JSON with ``y`` and no ``x``
  (``{"id": 17, "y": 3, "level": 0}``; ``level`` defaults to 0), or a binary batch of labels
  whose flags carry :data:`FLAG_LABELS` (with ids): per label its request id, class and level,
  no inputs (:func:`encode_labels`; one message for many labels, at a fraction of the JSON
  cost).

Every kind is checked as strictly as a labelled sample, with the same reason codes
(stream/sources/wire.py), and refused whole with :class:`~stream.sources.wire.InvalidMessage`.

>>> from learners.base import Problem
>>> decoder = ServingDecoder(Decoder(Problem(input_shape=(2,), num_classes=(3,))))
>>> decoder.decode(b'{"id": 4, "x": [1, 2]}').ids.tolist()
[4]
>>> decoder.decode(b'{"id": 4, "y": 2}').y.tolist()
[2]
>>> decoder.decode(b'{"y": 2}')
Traceback (most recent call last):
...
stream.sources.wire.InvalidMessage: missing_field: a label needs the 'id' of its request
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.sources.wire import (
    _FIXED,
    _INT32_MAX,
    _INT64_MAX,
    FLAG_IDS,
    FLAG_TASK,
    MAGIC,
    MAX_NDIM,
    VERSION,
    X_DTYPES,
    Decoder,
    InvalidMessage,
    Samples,
    _header_size,
    _json_int,
)

# A binary micro-batch of prediction requests: no label or level arrays.
FLAG_REQUEST = 0x04
# A binary batch of labels for earlier requests: ids, labels and levels; no inputs, so its dtype
# code is 0 and its sample shape empty (ndim 0).
FLAG_LABELS = 0x08
_NO_INPUTS = 0
_LABEL_BYTES = 8 + 4 + 1  # id <i8, label <i4, level u1


@dataclass
class Requests:
    """Samples to predict: ``x`` float32 ``[n, *input_shape]``; ``ids`` and ``task`` -1 where
    the message carries none (a request without an id is answered but joins no label)."""

    x: np.ndarray
    ids: np.ndarray
    task: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Labels:
    """Labels for earlier requests, by request id."""

    ids: np.ndarray
    y: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def encode_requests(x: np.ndarray, ids: np.ndarray, task: np.ndarray | None = None) -> bytes:
    """One binary micro-batch of prediction requests (float32 inputs, or uint8 pixels)."""
    x = np.asarray(x)
    code = 2 if x.dtype == np.uint8 else 1
    shape = x.shape[1:]
    if not 1 <= len(shape) <= MAX_NDIM:
        raise ValueError(f"a sample must have 1 to {MAX_NDIM} dimensions, got shape {shape}")
    flags = FLAG_REQUEST | FLAG_IDS | (FLAG_TASK if task is not None else 0)
    header = _FIXED.pack(MAGIC, VERSION, code, flags, len(shape), len(x))
    header += struct.pack(f"<{len(shape)}I", *shape)
    header += b"\0" * (_header_size(len(shape)) - len(header))
    parts = [header, np.asarray(ids, dtype="<i8").tobytes()]
    if task is not None:
        parts.append(np.asarray(task, dtype="<i4").tobytes())
    parts.append(np.ascontiguousarray(x, dtype=X_DTYPES[code]).tobytes())
    return b"".join(parts)


def encode_labels(ids: np.ndarray, y: np.ndarray, level: np.ndarray | None = None) -> bytes:
    """One binary batch of labels for the requests ``ids`` (``level``: 0 when None)."""
    ids, y = np.asarray(ids), np.asarray(y)
    level = np.zeros(len(ids), np.int64) if level is None else np.asarray(level)
    if not len(ids) == len(y) == len(level):
        raise ValueError(f"{len(ids)} ids, {len(y)} labels and {len(level)} levels")
    if len(ids) and (ids.min() < 0 or not 0 <= y.min() <= y.max() <= _INT32_MAX):
        raise ValueError("ids and labels must be non-negative, labels below 2**31")
    if len(ids) and not 0 <= level.min() <= level.max() <= 255:
        raise ValueError("levels must lie in [0, 255]")
    header = _FIXED.pack(MAGIC, VERSION, _NO_INPUTS, FLAG_LABELS | FLAG_IDS, 0, len(ids))
    header += b"\0" * (_header_size(0) - len(header))
    return b"".join(
        [
            header,
            ids.astype("<i8").tobytes(),
            y.astype("<i4").tobytes(),
            level.astype("u1").tobytes(),
        ]
    )


def encode_request_json(x: np.ndarray, id: int | None = None, task: int | None = None) -> bytes:
    """One JSON prediction request."""
    message: dict[str, Any] = {"x": np.asarray(x, dtype=np.float32).ravel().tolist()}
    if id is not None:
        message["id"] = int(id)
    if task is not None:
        message["task"] = int(task)
    return json.dumps(message, separators=(",", ":")).encode()


def encode_label_json(id: int, y: int, level: int = 0) -> bytes:
    """One JSON label message for request ``id``."""
    message: dict[str, Any] = {"id": int(id), "y": int(y)}
    if level:
        message["level"] = int(level)
    return json.dumps(message, separators=(",", ":")).encode()


class ServingDecoder:
    """Tells requests and labels from labelled samples and checks each against the problem."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def decode(self, value: bytes | None) -> Samples | Requests | Labels:
        decoder = self.decoder
        if not value:
            raise InvalidMessage("empty", "message has no value (empty or tombstone)")
        if len(value) > decoder.max_bytes:
            raise InvalidMessage(
                "oversized", f"{len(value)} bytes, the limit is {decoder.max_bytes}"
            )
        if value[:4] == MAGIC:
            flags = _FIXED.unpack_from(value)[3] if len(value) >= _FIXED.size else 0
            if flags & (FLAG_REQUEST | FLAG_LABELS):
                if decoder.format == "json":
                    raise InvalidMessage(
                        "undecodable", "binary message on a topic configured for JSON"
                    )
                if flags & FLAG_REQUEST:
                    return self._binary_requests(value)
                return self._binary_labels(value)
            return decoder.decode(value)
        if decoder.format == "binary":
            return decoder.decode(value)  # refuses it with the decoder's reason
        try:
            message = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise InvalidMessage("undecodable", f"not JSON ({type(exc).__name__})") from None
        if isinstance(message, dict) and "x" in message and "y" not in message:
            return self._json_request(message)
        if isinstance(message, dict) and "y" in message and "x" not in message:
            return self._json_label(message)
        return decoder.decode(value)

    def _json_request(self, message: dict[str, Any]) -> Requests:
        x = self.decoder._json_input(message["x"])
        ident = -1 if message.get("id") is None else _json_int(message["id"], "id", 0, _INT64_MAX)
        task = -1
        if message.get("task") is not None:
            task = _json_int(message["task"], "task", 0, _INT32_MAX)
            self.decoder._check_task(task)  # as a labelled sample's and a binary request's
        return Requests(x[None], np.array([ident], np.int64), np.array([task], np.int64))

    def _json_label(self, message: dict[str, Any]) -> Labels:
        if message.get("id") is None:
            raise InvalidMessage("missing_field", "a label needs the 'id' of its request")
        ident = _json_int(message["id"], "id", 0, _INT64_MAX)
        y = _json_int(message["y"], "y")
        level = self.decoder._json_level(message.get("level", 0))
        classes = int(self.decoder._num_classes[level])
        if not 0 <= y < classes:
            raise InvalidMessage(
                "label_out_of_range", f"label {y} outside [0, {classes}) at level {level}"
            )
        return Labels(
            np.array([ident], np.int64), np.array([y], np.int64), np.array([level], np.int64)
        )

    def _binary_requests(self, value: bytes) -> Requests:
        decoder = self.decoder
        code, flags, n, start = decoder._binary_header(value, FLAG_IDS | FLAG_TASK | FLAG_REQUEST)
        if not flags & FLAG_IDS:
            raise InvalidMessage("missing_field", "binary requests need ids (flag 0x01)")
        x_dtype = X_DTYPES[code]
        has_task = bool(flags & FLAG_TASK)
        expected = start + n * (8 + 4 * has_task + decoder.input_dim * x_dtype.itemsize)
        if len(value) < expected:
            raise InvalidMessage("truncated", f"{len(value)} bytes, {n} samples need {expected}")
        if len(value) > expected:
            raise InvalidMessage(
                "undecodable", f"{len(value) - expected} bytes after the last array"
            )
        ids = np.frombuffer(value, "<i8", n, start)
        offset = start + 8 * n
        task = None
        if has_task:
            task = np.frombuffer(value, "<i4", n, offset)
            offset += 4 * n
        raw = np.frombuffer(value, x_dtype, n * decoder.input_dim, offset).reshape(
            n, *decoder.input_shape
        )
        if int(ids.min()) < 0:
            raise InvalidMessage("wrong_type", "ids must be non-negative")
        if task is not None and int(task.min()) < 0:
            raise InvalidMessage("wrong_type", "tasks must be non-negative")
        if task is not None:
            decoder._check_task(int(task.max()))
        x = decoder._binary_inputs(raw, code)
        if x is raw:  # a view of the message: a pending request must not hold the whole buffer
            x = raw.copy()
        return Requests(
            x,
            ids.astype(np.int64),
            np.full(n, -1, np.int64) if task is None else task.astype(np.int64),
        )

    def _binary_labels(self, value: bytes) -> Labels:
        _, version, code, flags, ndim, n = _FIXED.unpack_from(value)
        if version != VERSION:
            raise InvalidMessage(
                "unsupported_version", f"binary version {version}, this daemon reads {VERSION}"
            )
        if flags & ~(FLAG_LABELS | FLAG_IDS):
            raise InvalidMessage("wrong_type", f"unknown flags {flags:#04x}")
        if not flags & FLAG_IDS:
            raise InvalidMessage("missing_field", "binary labels need ids (flag 0x01)")
        if code != _NO_INPUTS:
            raise InvalidMessage("wrong_type", f"binary labels carry no inputs: dtype code {code}")
        if ndim != 0:
            raise InvalidMessage("wrong_dimension", f"binary labels carry no inputs: ndim {ndim}")
        if n == 0:
            raise InvalidMessage("empty", "binary message with 0 labels")
        start = _header_size(0)
        expected = start + n * _LABEL_BYTES
        if len(value) < expected:
            raise InvalidMessage("truncated", f"{len(value)} bytes, {n} labels need {expected}")
        if len(value) > expected:
            raise InvalidMessage(
                "undecodable", f"{len(value) - expected} bytes after the last array"
            )
        ids = np.frombuffer(value, "<i8", n, start).astype(np.int64)
        y = np.frombuffer(value, "<i4", n, start + 8 * n).astype(np.int64)
        level = np.frombuffer(value, "u1", n, start + 12 * n).astype(np.int64)
        if int(ids.min()) < 0:
            raise InvalidMessage("wrong_type", "ids must be non-negative")
        self.decoder._check_labels(y, level)
        return Labels(ids, y, level)
