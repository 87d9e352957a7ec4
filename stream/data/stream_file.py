"""Recorded stream files: a JSON-lines form for people and a binary form for speed.

Both carry a header (dataset reference and fingerprint, test split, schedule, parameters, seed,
label space) and, per event, a stream-unique ``id``, the dataset ``row`` (or the input itself,
``x``, for inline streams), the label ``y``, its hierarchy ``level`` and the ``task``.

JSON lines (``*.jsonl``)::

    {"streamcl_stream": {"version": 1, "dataset": "digits", "schedule": "si-blurry", ...}}
    {"id": 0, "row": 517, "y": 3, "level": 0, "task": 0}
    {"id": 1, "row": 88, "y": 7, "level": 0, "task": 0, "x": [0.0, 0.25, ...]}   # inline form

Binary (any other suffix, ``*.scl`` by convention), little-endian::

    8 bytes  magic b"SCLSTRM1"
    8 bytes  uint64 header length H
    H bytes  header JSON, with "arrays": {name: {"dtype", "shape", "offset"}}
    ...      the data section, from the first 64-byte boundary after the header: each array's
             raw bytes at its offset (relative to the data section, 64-byte aligned);
             memory-mapped on read

Readers detect the form from the magic bytes, not the suffix.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeGuard

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from stream.data.datasets import MAX_CLASSES, MAX_LEVELS, Dataset, DatasetError, check_spec
from stream.data.schedules.schedule import MAX_TASKS, Schedule
from stream.engine.validation import outside_label_space

MAGIC = b"SCLSTRM1"
VERSION: Final = 1
ALIGN = 64
EVENT_ARRAYS = ("id", "row", "y", "level", "task")
# The dtypes each binary array may have: plain little-endian numbers, never objects (an object
# dtype would have numpy build Python objects out of file bytes).
ARRAY_DTYPES: dict[str, frozenset[str]] = {
    **{name: frozenset({"<i8", "<i4"}) for name in ("id", "row", "y", "level", "task")},
    "x": frozenset({"<f4", "|u1"}),
}
_INPUT_DTYPES = {"float32": "<f4", "uint8": "|u1"}
# Bounds on what a header may declare, far above any real stream and far below what would
# exhaust memory or overflow a product before a size check.
MAX_HEADER_BYTES = 16 << 20
MAX_COUNT = 1 << 40
_INT64_MAX = 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class StreamFileError(ValueError):
    """A stream file that cannot be read; the message names the file and the problem."""


class StreamHeader(BaseModel):
    """What a recorded stream says about itself."""

    model_config = ConfigDict(extra="allow")

    version: Literal[1] = VERSION
    dataset: str
    test_split: str = "test"
    dataset_fingerprint: dict[str, Any] = Field(default_factory=dict)
    schedule: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: StrictInt
    num_samples: StrictInt = Field(ge=0, le=MAX_COUNT)
    num_tasks: StrictInt = Field(ge=1, le=MAX_TASKS)
    num_classes: list[Annotated[StrictInt, Field(ge=1, le=MAX_CLASSES)]] = Field(
        min_length=1, max_length=MAX_LEVELS
    )
    level_names: list[str]
    inline: StrictBool = False
    input_shape: list[Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)]] = Field(
        default_factory=list, max_length=8
    )
    input_dtype: Literal["float32", "uint8"] = "float32"
    info: dict[str, Any] = Field(default_factory=dict)
    # When labels arrive (stream/data/label_delay.py: N, uniform:A-B, exponential:MEAN samples
    # late, drawn with ``seed``); None: with their samples.
    label_delay: StrictInt | StrictStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StreamHeader:
        if len(self.level_names) != len(self.num_classes):
            raise ValueError(
                f"{len(self.level_names)} level_names for {len(self.num_classes)} levels"
            )
        if math.prod(self.input_shape) > MAX_COUNT:
            raise ValueError(f"input_shape {self.input_shape} holds more than {MAX_COUNT} values")
        return self


@dataclass
class RecordedStream:
    """A stream file's header and event arrays (``x`` only for inline streams)."""

    header: StreamHeader
    id: np.ndarray
    row: np.ndarray
    y: np.ndarray
    level: np.ndarray
    task: np.ndarray
    x: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


def write_stream(path: str | Path, stream: RecordedStream) -> Path:
    """Write ``stream`` as JSON lines (``.jsonl``) or binary (any other suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = stream.header.model_copy(
        update={"num_samples": len(stream), "inline": stream.x is not None}
    )
    if path.suffix == ".jsonl":
        _write_jsonl(path, header, stream)
    else:
        _write_binary(path, header, stream)
    return path


def _write_jsonl(path: Path, header: StreamHeader, stream: RecordedStream) -> None:
    columns = [getattr(stream, name).tolist() for name in EVENT_ARRAYS]
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"streamcl_stream": header.model_dump()}) + "\n")
        for i, values in enumerate(zip(*columns, strict=True)):
            event: dict[str, Any] = dict(zip(EVENT_ARRAYS, values, strict=True))
            if stream.x is not None:
                event["x"] = stream.x[i].tolist()
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def _write_binary(path: Path, header: StreamHeader, stream: RecordedStream) -> None:
    arrays: dict[str, np.ndarray] = {
        "id": stream.id.astype("<i8"),
        "row": stream.row.astype("<i8"),
        "y": stream.y.astype("<i8"),
        "level": stream.level.astype("<i8"),
        "task": stream.task.astype("<i4"),
    }
    if stream.x is not None:
        x = np.asarray(stream.x)
        arrays["x"] = x if x.dtype == np.uint8 else x.astype("<f4")
    layout: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, array in arrays.items():
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset = _align(offset + array.nbytes)
    header_bytes = json.dumps({**header.model_dump(), "arrays": layout}).encode()
    data_start = _align(len(MAGIC) + 8 + len(header_bytes))
    with path.open("wb") as out:
        out.write(MAGIC)
        out.write(len(header_bytes).to_bytes(8, "little"))
        out.write(header_bytes)
        for name, array in arrays.items():
            out.seek(data_start + layout[name]["offset"])
            out.write(np.ascontiguousarray(array).tobytes())
        out.truncate(data_start + offset)


def _align(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def read_stream(path: str | Path) -> RecordedStream:
    """Read a stream file in either form.

    Every count in the file is bounded before anything is allocated, and every refusal is a
    :class:`StreamFileError` that names the file, the byte offset (binary) or line (JSON
    lines), and the reason."""
    path = Path(path)
    if not path.is_file():
        raise StreamFileError(f"stream file {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(len(MAGIC))
    if magic == MAGIC:
        return _read_binary(path)
    return _read_jsonl(path)


def _header(where: str, raw: Any) -> StreamHeader:
    if not isinstance(raw, dict):
        raise StreamFileError(f"{where}: the stream header must be a JSON object")
    try:
        header = StreamHeader.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StreamFileError(f"{where}: invalid stream header: {_short(fields)}") from None
    # A generated dataset is built from the header's spec when the stream is replayed: its
    # bounds are held here, before anything is generated.
    try:
        check_spec(header.dataset)
    except DatasetError as exc:
        raise StreamFileError(f"{where}: the header's dataset: {_short(str(exc))}") from None
    return header


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_binary(path: Path) -> RecordedStream:
    file_size = path.stat().st_size
    prefix = len(MAGIC) + 8
    if file_size < prefix:
        raise StreamFileError(f"{path}: byte {len(MAGIC)}: file ends inside the header length")
    with path.open("rb") as handle:
        handle.seek(len(MAGIC))
        size = int.from_bytes(handle.read(8), "little")
        if size > min(MAX_HEADER_BYTES, file_size - prefix):
            raise StreamFileError(
                f"{path}: byte {len(MAGIC)}: header length {size} exceeds the "
                f"{min(MAX_HEADER_BYTES, file_size - prefix)} bytes available"
            )
        text = handle.read(size)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StreamFileError(
            f"{path}: byte {prefix + exc.pos}: corrupt stream header ({exc.msg})"
        ) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, and too many digits
        raise StreamFileError(
            f"{path}: byte {prefix}: corrupt stream header ({_json_failure(exc)})"
        ) from None
    where = f"{path}: byte {prefix}"
    if not isinstance(raw, dict):
        raise StreamFileError(f"{where}: the stream header must be a JSON object")
    layout = raw.pop("arrays", None)
    header = _header(where, raw)
    if not isinstance(layout, dict):
        raise StreamFileError(f'{where}: header has no "arrays" object')
    data_start = _align(prefix + size)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in layout.items():
        dtype, shape, start = _array_spec(where, header, name, spec, data_start)
        nbytes = dtype.itemsize * math.prod(shape)
        if start + nbytes > file_size:
            raise StreamFileError(
                f"{path}: byte {start}: array {name!r} needs {nbytes} bytes, the file ends "
                f"{max(file_size - start, 0)} bytes after its start (truncated?)"
            )
        if nbytes == 0:
            arrays[name] = np.empty(shape, dtype=dtype)
        else:
            # copy-on-write: batches are writable views (no copy, no aliasing of the file)
            arrays[name] = np.memmap(path, dtype=dtype, mode="c", offset=start, shape=shape)
    missing = [name for name in EVENT_ARRAYS if name not in arrays]
    if missing:
        raise StreamFileError(f"{where}: binary stream lacks event arrays {missing}")
    if header.inline and "x" not in arrays:
        raise StreamFileError(f'{where}: inline stream without an "x" array')
    starts = {name: data_start + int(layout[name]["offset"]) for name in arrays}

    def locate(name: str, event: int) -> str:
        return f"{path}: byte {starts[name] + event * arrays[name].itemsize}"

    return _checked(header, arrays, locate)


def _array_spec(
    where: str, header: StreamHeader, name: Any, spec: Any, data_start: int
) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """The dtype, shape and absolute start of one array, each checked against the whitelist
    and the header before anything is mapped."""
    label = repr(_short(str(name), 40))
    if name not in ARRAY_DTYPES:
        raise StreamFileError(f"{where}: unknown array {label}")
    if not isinstance(spec, dict):
        raise StreamFileError(f"{where}: array {label}: spec must be an object")
    dtype_name, shape, offset = spec.get("dtype"), spec.get("shape"), spec.get("offset")
    if not isinstance(dtype_name, str) or dtype_name not in ARRAY_DTYPES[name]:
        raise StreamFileError(
            f"{where}: array {label}: dtype {_short(repr(dtype_name), 40)} is not one of "
            f"{sorted(ARRAY_DTYPES[name])}"
        )
    if not _is_count(offset) or offset % ALIGN:
        raise StreamFileError(
            f"{where}: array {label}: offset must be a non-negative multiple of {ALIGN}"
        )
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise StreamFileError(f"{where}: array {label}: shape must be a list of counts >= 0")
    expected = [header.num_samples, *header.input_shape] if name == "x" else [header.num_samples]
    if shape != expected:
        raise StreamFileError(
            f"{where}: array {label}: shape {_short(str(shape), 60)}, the header implies {expected}"
        )
    if name == "x" and dtype_name != _INPUT_DTYPES[header.input_dtype]:
        raise StreamFileError(
            f"{where}: array 'x': dtype {dtype_name}, the header says {header.input_dtype}"
        )
    dtype = np.dtype(dtype_name)
    assert not dtype.hasobject  # the whitelist holds plain numbers only
    return dtype, tuple(shape), data_start + offset


def _is_count(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_COUNT


def _read_jsonl(path: Path) -> RecordedStream:
    with path.open("rb") as lines:
        first = lines.readline(MAX_HEADER_BYTES + 1)
        try:
            raw = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StreamFileError(
                f"{path}:1: not a streamcl stream file (no header line)"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise StreamFileError(
                f"{path}:1: corrupt stream header ({_json_failure(exc)})"
            ) from None
        if not isinstance(raw, dict) or "streamcl_stream" not in raw:
            raise StreamFileError(f'{path}:1: first line must be {{"streamcl_stream": {{...}}}}')
        header = _header(f"{path}:1", raw["streamcl_stream"])
        columns: dict[str, list[Any]] = {name: [] for name in (*EVENT_ARRAYS, "x")}
        numbers: list[int] = []
        input_size = math.prod(header.input_shape)
        # The longest line an event can need: its five integers and, inline, every input
        # value written out in full.
        longest = 1024 + (32 * input_size if header.inline else 0)
        for number, line in enumerate(iter(lambda: lines.readline(longest + 1), b""), start=2):
            if len(line) > longest:
                raise StreamFileError(f"{path}:{number}: line longer than {longest} bytes")
            if not line.strip():
                continue
            if len(numbers) >= header.num_samples:
                raise StreamFileError(
                    f"{path}:{number}: more events than the header's {header.num_samples}"
                )
            try:
                event = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise StreamFileError(
                    f"{path}:{number}: malformed event ({_json_failure(exc)})"
                ) from None
            # JSON's booleans are the literals true and false: a line without them holds none
            maybe_bools = b"true" in line or b"false" in line
            values = _check_event(f"{path}:{number}", header, event, input_size, maybe_bools)
            for name in EVENT_ARRAYS:
                columns[name].append(event[name])
            if values is not None:
                columns["x"].append(values.reshape(-1))  # flat or nested alike
            numbers.append(number)
    arrays = {name: np.asarray(columns[name], dtype=np.int64) for name in EVENT_ARRAYS}
    if header.inline:
        shape = (len(numbers), *header.input_shape)
        arrays["x"] = np.asarray(columns["x"], dtype=np.dtype(header.input_dtype)).reshape(shape)

    def locate(name: str, event: int) -> str:
        return f"{path}:{numbers[event]}"

    return _checked(header, arrays, locate, f"{path}: end of file")


def _json_failure(exc: Exception) -> str:
    """Why ``json.loads`` failed, in a few words: besides malformed JSON it refuses integers
    of more digits than Python converts (a plain ValueError) and nesting deeper than the
    stack."""
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | RecursionError):
        return type(exc).__name__
    return f"a number of more than {sys.get_int_max_str_digits()} digits"


def _check_event(
    where: str, header: StreamHeader, event: Any, input_size: int, maybe_bools: bool = True
) -> np.ndarray | None:
    """The event checked; its inline input as float64 values (None when not inline).
    ``maybe_bools``: whether the event's line could hold a JSON boolean (``true``/``false``),
    which numpy would read as 1 or 0 among numbers."""
    if not isinstance(event, dict):
        raise StreamFileError(f"{where}: malformed event (not a JSON object)")
    for name in EVENT_ARRAYS:
        value = event.get(name)
        if type(value) is not int or not 0 <= value <= _INT64_MAX:
            got = "missing" if value is None else _short(repr(value), 40)
            raise StreamFileError(
                f"{where}: malformed event ({name!r} must be an integer >= 0, got {got})"
            )
    if not header.inline:
        return None
    x = event.get("x")
    shape = tuple(header.input_shape)
    try:
        # numbers only: with a dtype given, numpy would read "0.5" as 0.5 and null as NaN
        values = np.asarray(x)
        if values.dtype.kind not in "iuf" or (maybe_bools and _holds_bool(x)):
            raise TypeError
        values = values.astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        raise StreamFileError(
            f"{where}: malformed event ('x' must be numbers in the shape {shape})"
        ) from None
    if not isinstance(x, list) or values.size != input_size:
        raise StreamFileError(
            f"{where}: malformed event ('x' has {values.size} values, the header's input_shape "
            f"{shape} needs {input_size})"
        )
    if values.shape not in (shape, (input_size,)):
        # the same count in another nesting could not be stacked with the other events
        raise StreamFileError(
            f"{where}: malformed event ('x' has shape {values.shape}, the header's input_shape "
            f"is {shape}, or give {input_size} values in one list)"
        )
    with np.errstate(invalid="ignore"):
        if header.input_dtype == "uint8":
            fits = bool(((values >= 0) & (values <= 255) & (values == np.round(values))).all())
        else:
            # beyond float32 would become inf; NaN and inf are reported with the event index
            fits = not bool((np.abs(values[np.isfinite(values)]) > _FLOAT32_MAX).any())
    if not fits:
        raise StreamFileError(
            f"{where}: malformed event ('x' holds a value that is not a {header.input_dtype})"
        )
    return values


def _holds_bool(value: Any) -> bool:
    """Whether ``value`` or any list nested in it holds a boolean."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is bool:
            return True
        if isinstance(item, list):
            pending.extend(item)
    return False


def _checked(
    header: StreamHeader,
    arrays: dict[str, np.ndarray],
    locate: Callable[[str, int], str],
    end: str | None = None,
) -> RecordedStream:
    """The events checked against the header: counts, and each column within its range."""
    n = len(arrays["y"])
    if n != header.num_samples:
        where = end or locate("y", 0)
        raise StreamFileError(f"{where}: header says {header.num_samples} events, file has {n}")
    bounds = {
        "id": (0, _INT64_MAX),
        "row": (0, _INT64_MAX),
        "y": (0, max(header.num_classes) - 1),
        "level": (0, len(header.num_classes) - 1),
        "task": (0, header.num_tasks - 1),
    }
    for name, (low, high) in bounds.items():
        column = arrays[name]
        if n and (int(column.min()) < low or int(column.max()) > high):
            bad = int(np.flatnonzero((column < low) | (column > high))[0])
            raise StreamFileError(
                f"{locate(name, bad)}: event {bad}: {name} {int(column[bad])} outside "
                f"[{low}, {high}] (from the header)"
            )
    if len(header.num_classes) > 1:  # each label within its own level's classes
        outside = outside_label_space(arrays["y"], arrays["level"], np.asarray(header.num_classes))
        if outside is not None:
            bad = outside[0]
            level = int(arrays["level"][bad])
            raise StreamFileError(
                f"{locate('y', bad)}: event {bad}: y {int(arrays['y'][bad])} outside "
                f"[0, {header.num_classes[level] - 1}] at level {level} (from the header)"
            )
    duplicate = first_duplicate(arrays["id"])
    if duplicate is not None:
        raise StreamFileError(
            f"{locate('id', duplicate)}: event {duplicate} has id {int(arrays['id'][duplicate])}, "
            "which an earlier event has (ids join delayed labels to their samples: each must "
            "be unique)"
        )
    return RecordedStream(
        header=header,
        id=arrays["id"],
        row=arrays["row"],
        y=arrays["y"],
        level=arrays["level"],
        task=arrays["task"],
        x=arrays.get("x") if header.inline else None,
    )


def first_duplicate(ids: np.ndarray) -> int | None:
    """The index of the first id an earlier position holds, or None when all differ.

    >>> first_duplicate(np.array([3, 1, 4, 1, 5])), first_duplicate(np.arange(4))
    (3, None)
    """
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):  # a recorded stream's usual order
        return None
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if not len(repeated):
        return None
    return int(order[repeated + 1].min())


def record_schedule(
    dataset: Dataset,
    schedule: Schedule,
    schedule_name: str,
    params: dict[str, Any],
    seed: int,
    inline: bool = False,
) -> RecordedStream:
    """The recorded form of ``schedule`` over ``dataset`` (inputs inline or as row references)."""
    header = StreamHeader(
        dataset=dataset.spec,
        dataset_fingerprint=dataset.fingerprint(),
        schedule=schedule_name,
        params=params,
        seed=seed,
        num_samples=len(schedule),
        num_tasks=schedule.num_tasks,
        num_classes=dataset.num_classes_per_level,
        level_names=list(dataset.level_names),
        inline=inline,
        input_shape=list(dataset.input_shape),
        input_dtype="uint8" if dataset.X_train.dtype == np.uint8 else "float32",
        info=schedule.info,
    )
    return RecordedStream(
        header=header,
        id=np.arange(len(schedule), dtype=np.int64),
        row=schedule.rows,
        y=schedule.y,
        level=schedule.level,
        task=schedule.task,
        x=dataset.X_train[schedule.rows] if inline else None,
    )
