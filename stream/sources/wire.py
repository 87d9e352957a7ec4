"""The messages the daemon reads from Kafka: one sample as JSON, or a micro-batch in binary.

Both forms are specified in ``docs/wire-format.md``. A JSON message is one labelled sample::

    {"x": [0.0, 0.25, ...], "y": 3, "level": 0, "task": 1, "id": 517}

A binary message is a little-endian header followed by typed arrays (ids, labels, tasks, inputs,
levels) for ``n`` samples; it costs no text parsing and decodes without copying.

:class:`Decoder` checks every message against the problem the daemon learns (input shape, label
space per level) and refuses a bad one whole with an :class:`InvalidMessage` that carries a
reason code (the ``reason`` label of ``streamcl_invalid_messages_total``) and a one-line detail.
Whatever the bytes, decoding either returns valid samples or raises ``InvalidMessage``.

>>> from learners.base import Problem
>>> decoder = Decoder(Problem(input_shape=(2,), num_classes=(3,)))
>>> samples = decoder.decode(encode_binary(np.ones((2, 2), np.float32), np.array([0, 2])))
>>> samples.y.tolist(), samples.x.shape
([0, 2], (2, 2))
>>> decoder.decode(b'{"x": [1, 2], "y": 7}')
Traceback (most recent call last):
...
stream.sources.wire.InvalidMessage: label_out_of_range: label 7 outside [0, 3) at level 0
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from learners.base import Problem
from stream.data.finite import all_finite
from stream.engine.validation import outside_label_space

MAGIC = b"SCLB"
VERSION = 1
# dtype code -> input dtype on the wire; uint8 inputs are pixels, scaled to [0, 1] on decode
# exactly as image datasets are (stream.data.datasets.as_float_tensor).
X_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("u1")}
FLAG_IDS = 0x01
FLAG_TASK = 0x02
MAX_NDIM = 4
_FIXED = struct.Struct("<4sBBBBI")  # magic, version, dtype code, flags, ndim, n
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# Characters of detail kept per refusal (see InvalidMessage).
MAX_DETAIL = 200
# Default bound on |input|: far above any scaled feature or pixel, far below where a learner's
# sums of squares leave float32 (1e6 squared, times a million samples, is 1e18 << 3.4e38).
DEFAULT_MAX_ABS = 1e6
# Default bound on task ids: task-end bookkeeping grows with the number of tasks.
DEFAULT_MAX_TASK = 100_000

Format = Literal["auto", "json", "binary"]

# The reason codes, in the order docs/wire-format.md lists them.
REASONS = (
    "oversized",
    "empty",
    "undecodable",
    "unsupported_version",
    "truncated",
    "wrong_type",
    "missing_field",
    "wrong_dimension",
    "non_finite",
    "out_of_range",
    "label_out_of_range",
    "unknown_level",
)


class InvalidMessage(ValueError):
    """A message that fails decoding or validation; ``reason`` is one of :data:`REASONS`.

    The detail is cut to :data:`MAX_DETAIL` characters: it may quote the message, and it goes
    into a log line, a dead-letter record and a Kafka header, none of which may grow with what a
    producer sends."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = short(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def short(text: str, limit: int | None = None) -> str:
    """``text`` cut to ``limit`` (default :data:`MAX_DETAIL`) characters, marked where cut."""
    limit = MAX_DETAIL if limit is None else limit
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


@dataclass
class Samples:
    """Decoded samples: ``x`` float32 ``[n, *input_shape]``; ``task`` and ``ids`` are -1 where
    the message carries none."""

    x: np.ndarray
    y: np.ndarray
    level: np.ndarray
    task: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _header_size(ndim: int) -> int:
    return (_FIXED.size + 4 * ndim + 7) // 8 * 8


def encode_binary(
    x: np.ndarray,
    y: np.ndarray,
    level: np.ndarray | None = None,
    task: np.ndarray | None = None,
    ids: np.ndarray | None = None,
) -> bytes:
    """One binary micro-batch message. ``x`` is float32 (any float is cast) or uint8 pixels."""
    x = np.asarray(x)
    n = len(x)
    code = 2 if x.dtype == np.uint8 else 1
    sample_shape = x.shape[1:]
    if not 1 <= len(sample_shape) <= MAX_NDIM:
        raise ValueError(f"a sample must have 1 to {MAX_NDIM} dimensions, got shape {sample_shape}")
    flags = (FLAG_IDS if ids is not None else 0) | (FLAG_TASK if task is not None else 0)
    header = _FIXED.pack(MAGIC, VERSION, code, flags, len(sample_shape), n)
    header += struct.pack(f"<{len(sample_shape)}I", *sample_shape)
    header += b"\0" * (_header_size(len(sample_shape)) - len(header))
    parts = [header]
    if ids is not None:
        parts.append(_column(ids, "ids", "<i8", n))
    parts.append(_column(y, "y", "<i4", n))
    if task is not None:
        parts.append(_column(task, "task", "<i4", n))
    parts.append(np.ascontiguousarray(x, dtype=X_DTYPES[code]).tobytes())
    parts.append(np.zeros(n, "u1").tobytes() if level is None else _column(level, "level", "u1", n))
    return b"".join(parts)


def _column(values: Any, name: str, dtype: str, n: int) -> bytes:
    """``values`` as ``n`` integers of ``dtype``; a value the type cannot hold is an error (a
    cast would wrap it: level 256 read back as 0, -1 as 255)."""
    array = np.asarray(values)
    if array.shape != (n,) or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{name} must be {n} integers, one per sample, got {array.dtype} {array.shape}"
        )
    limits = np.iinfo(dtype)
    if n and (int(array.min()) < limits.min or int(array.max()) > limits.max):
        raise ValueError(f"{name} must be in [{limits.min}, {limits.max}] for the binary form")
    return array.astype(dtype).tobytes()


def encode_json(
    x: np.ndarray | list[Any],
    y: int,
    level: int = 0,
    task: int | None = None,
    id: int | None = None,
) -> bytes:
    """One JSON single-sample message (inputs written as the float32 values the learner sees)."""
    message: dict[str, Any] = {"x": np.asarray(x, dtype=np.float32).ravel().tolist(), "y": int(y)}
    if level:
        message["level"] = int(level)
    if task is not None:
        message["task"] = int(task)
    if id is not None:
        message["id"] = int(id)
    return json.dumps(message, separators=(",", ":")).encode()


class Decoder:
    """Decodes and validates messages for one problem."""

    def __init__(
        self,
        problem: Problem,
        format: Format = "auto",
        max_bytes: int = 1 << 20,
        max_abs: float = DEFAULT_MAX_ABS,
        max_task: int = DEFAULT_MAX_TASK,
    ) -> None:
        """``max_abs`` bounds every input value, ``max_task`` every task id (refused beyond,
        as ``out_of_range``)."""
        self.problem = problem
        self.format = format
        self.max_bytes = max_bytes
        self.max_abs = float(max_abs)
        self.max_task = int(max_task)
        self.input_shape = tuple(int(s) for s in problem.input_shape)
        self.input_dim = problem.input_dim
        self._num_classes = np.asarray(problem.num_classes, dtype=np.int64)
        self._levels = {name: i for i, name in enumerate(problem.level_names)}

    def decode(self, value: bytes | None) -> Samples:
        """The samples in ``value``, or :class:`InvalidMessage` saying why there are none."""
        if not value:
            raise InvalidMessage("empty", "message has no value (empty or tombstone)")
        if len(value) > self.max_bytes:
            raise InvalidMessage("oversized", f"{len(value)} bytes, the limit is {self.max_bytes}")
        binary = value[:4] == MAGIC
        if self.format == "json" and binary:
            raise InvalidMessage("undecodable", "binary message on a topic configured for JSON")
        if self.format == "binary" and not binary:
            raise InvalidMessage(
                "undecodable", "message does not start with the binary magic b'SCLB'"
            )
        return self._binary(value) if binary else self._json(value)

    # -- binary -------------------------------------------------------------------------------

    def _binary_header(self, value: bytes, known_flags: int) -> tuple[int, int, int, int]:
        """Check a binary message's fixed header and sample shape (flags outside
        ``known_flags`` are refused); returns its dtype code, flags, sample count and the byte
        where its arrays start."""
        if len(value) < _FIXED.size:
            raise InvalidMessage("truncated", f"{len(value)} bytes, shorter than the binary header")
        _, version, code, flags, ndim, n = _FIXED.unpack_from(value)
        if version != VERSION:
            raise InvalidMessage(
                "unsupported_version", f"binary version {version}, this daemon reads {VERSION}"
            )
        if flags & ~known_flags:  # first: a serving message (requests, labels) says what it is
            raise InvalidMessage("wrong_type", f"unknown flags {flags:#04x}")
        if code not in X_DTYPES:
            raise InvalidMessage("wrong_type", f"unknown input dtype code {code}")
        if not 1 <= ndim <= MAX_NDIM:
            raise InvalidMessage("wrong_dimension", f"sample ndim {ndim} outside [1, {MAX_NDIM}]")
        if n == 0:
            raise InvalidMessage("empty", "binary message with 0 samples")
        start = _header_size(ndim)
        if len(value) < start:
            raise InvalidMessage("truncated", f"{len(value)} bytes, the header needs {start}")
        shape = struct.unpack_from(f"<{ndim}I", value, _FIXED.size)
        if shape != self.input_shape and shape != (self.input_dim,):
            raise InvalidMessage(
                "wrong_dimension", f"sample shape {shape}, expected {self.input_shape}"
            )
        return code, flags, n, start

    def _binary_inputs(self, raw: np.ndarray, code: int) -> np.ndarray:
        """A binary message's inputs as float32: float32 values checked (finite, within
        ``max_abs``), uint8 pixels scaled to [0, 1]."""
        if code == 1:
            self._check_values(raw)
            return raw
        # Correctly rounded float32 division, the same as stream.data.datasets.as_float_tensor.
        return raw.astype(np.float32) / np.float32(255)

    def _binary(self, value: bytes) -> Samples:
        code, flags, n, start = self._binary_header(value, FLAG_IDS | FLAG_TASK)
        x_dtype = X_DTYPES[code]
        has_ids, has_task = bool(flags & FLAG_IDS), bool(flags & FLAG_TASK)
        expected = start + n * (
            8 * has_ids + 4 + 4 * has_task + self.input_dim * x_dtype.itemsize + 1
        )
        if len(value) < expected:
            raise InvalidMessage("truncated", f"{len(value)} bytes, {n} samples need {expected}")
        if len(value) > expected:
            raise InvalidMessage(
                "undecodable", f"{len(value) - expected} bytes after the last array"
            )
        offset = start
        ids = task = None
        if has_ids:
            ids = np.frombuffer(value, "<i8", n, offset)
            offset += 8 * n
        y = np.frombuffer(value, "<i4", n, offset)
        offset += 4 * n
        if has_task:
            task = np.frombuffer(value, "<i4", n, offset)
            offset += 4 * n
        raw = np.frombuffer(value, x_dtype, n * self.input_dim, offset).reshape(
            n, *self.input_shape
        )
        offset += raw.nbytes
        level = np.frombuffer(value, "u1", n, offset)
        if ids is not None and int(ids.min()) < 0:
            raise InvalidMessage("wrong_type", "ids must be non-negative")
        if task is not None and int(task.min()) < 0:
            raise InvalidMessage("wrong_type", "tasks must be non-negative")
        if task is not None:
            self._check_task(int(task.max()))
        x = self._binary_inputs(raw, code)
        level64 = level.astype(np.int64)
        self._check_labels(y.astype(np.int64), level64)
        return Samples(
            x=x,
            y=y.astype(np.int64),
            level=level64,
            task=np.full(n, -1, np.int64) if task is None else task.astype(np.int64),
            ids=np.full(n, -1, np.int64) if ids is None else ids.astype(np.int64),
        )

    def _check_labels(self, y: np.ndarray, level: np.ndarray) -> None:
        bad = outside_label_space(y, level, self._num_classes)
        if bad is not None:
            _, kind, what = bad
            raise InvalidMessage("unknown_level" if kind == "level" else "label_out_of_range", what)

    # -- JSON ---------------------------------------------------------------------------------

    def _json(self, value: bytes) -> Samples:
        try:
            message = json.loads(value)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            raise InvalidMessage("undecodable", f"not JSON ({type(exc).__name__})") from None
        if not isinstance(message, dict):
            raise InvalidMessage(
                "wrong_type", f"a JSON message must be an object, got {type(message).__name__}"
            )
        for name in ("x", "y"):
            if name not in message:
                raise InvalidMessage("missing_field", f"field {name!r} is missing")
        x = self._json_input(message["x"])
        y = _json_int(message["y"], "y")
        level = self._json_level(message.get("level", 0))
        task = (
            -1 if message.get("task") is None else _json_int(message["task"], "task", 0, _INT32_MAX)
        )
        if task >= 0:
            self._check_task(task)
        ident = -1 if message.get("id") is None else _json_int(message["id"], "id", 0, _INT64_MAX)
        classes = int(self._num_classes[level])
        if not 0 <= y < classes:
            raise InvalidMessage(
                "label_out_of_range", f"label {y} outside [0, {classes}) at level {level}"
            )
        return Samples(
            x=x[None],
            y=np.array([y], np.int64),
            level=np.array([level], np.int64),
            task=np.array([task], np.int64),
            ids=np.array([ident], np.int64),
        )

    def _json_input(self, raw: Any) -> np.ndarray:
        if not isinstance(raw, list):
            raise InvalidMessage(
                "wrong_type", f"'x' must be a list of numbers, got {type(raw).__name__}"
            )
        if _deeper_than(raw, len(self.input_shape)):
            # before numpy, which cannot hold more than 32 dimensions
            raise InvalidMessage(
                "wrong_dimension",
                f"'x' nests lists more than {len(self.input_shape)} deep, "
                f"expected shape {self.input_shape}",
            )
        try:
            cells = np.array(raw, dtype=object)
        except ValueError:
            raise InvalidMessage("wrong_dimension", "'x' is a ragged nested list") from None
        # numpy would turn "1.5" or True into numbers; a message with them is malformed.
        if not all(type(v) is float or type(v) is int for v in cells.flat):
            raise InvalidMessage("wrong_type", "'x' holds something other than numbers")
        if cells.shape != self.input_shape and cells.shape != (self.input_dim,):
            raise InvalidMessage(
                "wrong_dimension", f"'x' has shape {cells.shape}, expected {self.input_shape}"
            )
        try:
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
                x = cells.astype(np.float64).astype(np.float32).reshape(self.input_shape)
        except OverflowError:
            raise InvalidMessage(
                "non_finite", "'x' holds an integer beyond the float range"
            ) from None
        self._check_values(x)
        return x

    def _check_values(self, x: np.ndarray) -> None:
        """Finite, and within ``max_abs``: a finite 3e38 passes a finiteness test but turns a
        learner's sums of squares to inf."""
        _check_finite(x)
        # min and max rather than abs: no temporary the size of the batch
        low, high = float(x.min()), float(x.max())
        if max(-low, high) > self.max_abs:
            raise InvalidMessage(
                "out_of_range",
                f"input value {low if -low > high else high:g} beyond "
                f"messages.max_abs = {self.max_abs:g}",
            )

    def _check_task(self, task: int) -> None:
        if task > self.max_task:
            raise InvalidMessage(
                "out_of_range", f"task {task} beyond messages.max_task = {self.max_task}"
            )

    def _json_level(self, raw: Any) -> int:
        if isinstance(raw, str):
            if raw not in self._levels:
                raise InvalidMessage(
                    "unknown_level",
                    f"level {short(raw, 40)!r} is not one of {list(self._levels)}",
                )
            return self._levels[raw]
        level = _json_int(raw, "level")
        if not 0 <= level < len(self._num_classes):
            raise InvalidMessage(
                "unknown_level", f"level {level} outside [0, {len(self._num_classes)})"
            )
        return level


def _json_int(raw: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if type(raw) is not int:
        raise InvalidMessage("wrong_type", f"{name!r} must be an integer, got {type(raw).__name__}")
    if (minimum is not None and raw < minimum) or (maximum is not None and raw > maximum):
        raise InvalidMessage("wrong_type", f"{name!r} must be in [{minimum}, {maximum}], got {raw}")
    return raw


def _deeper_than(raw: list[Any], depth: int) -> bool:
    """Whether lists nest in ``raw`` (itself a list) more than ``depth`` deep, without
    recursion and without looking further than that depth."""
    level = [raw]
    for _ in range(depth):
        level = [item for items in level for item in items if isinstance(item, list)]
        if not level:
            return False
    return True


def _check_finite(x: np.ndarray) -> None:
    if not all_finite(x):
        raise InvalidMessage("non_finite", "input contains NaN or inf")
