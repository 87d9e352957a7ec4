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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.data.datasets import Dataset
from stream.data.schedules import Schedule

MAGIC = b"SCLSTRM1"
VERSION = 1
ALIGN = 64
EVENT_ARRAYS = ("id", "row", "y", "level", "task")


class StreamFileError(ValueError):
    """A stream file that cannot be read; the message names the file and the problem."""


class StreamHeader(BaseModel):
    """What a recorded stream says about itself."""

    model_config = ConfigDict(extra="allow")

    version: int = VERSION
    dataset: str
    test_split: str = "test"
    dataset_fingerprint: dict[str, Any] = Field(default_factory=dict)
    schedule: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    num_samples: int
    num_tasks: int
    num_classes: list[int]
    level_names: list[str]
    inline: bool = False
    input_shape: list[int] = Field(default_factory=list)
    input_dtype: str = "float32"
    info: dict[str, Any] = Field(default_factory=dict)
    # When labels arrive (stream/data/label_delay.py: N, uniform:A-B, exponential:MEAN samples
    # late, drawn with ``seed``); None: with their samples.
    label_delay: int | str | None = None


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
    """Read a stream file in either form."""
    path = Path(path)
    if not path.is_file():
        raise StreamFileError(f"stream file {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(len(MAGIC))
    if magic == MAGIC:
        return _read_binary(path)
    return _read_jsonl(path)


def _header(path: Path, raw: Any) -> StreamHeader:
    try:
        return StreamHeader.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StreamFileError(f"{path}: invalid stream header: {fields}") from None


def _read_binary(path: Path) -> RecordedStream:
    with path.open("rb") as handle:
        handle.seek(len(MAGIC))
        size = int.from_bytes(handle.read(8), "little")
        try:
            raw = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StreamFileError(f"{path}: corrupt binary stream header ({exc})") from None
    layout = raw.pop("arrays", None)
    header = _header(path, raw)
    if not isinstance(layout, dict) or any(name not in layout for name in EVENT_ARRAYS):
        raise StreamFileError(f"{path}: binary stream lacks event arrays {EVENT_ARRAYS}")
    file_size = path.stat().st_size
    data_start = _align(len(MAGIC) + 8 + size)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in layout.items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        start = data_start + int(spec["offset"])
        if start + dtype.itemsize * int(np.prod(shape)) > file_size:
            raise StreamFileError(
                f"{path}: array {name!r} runs past the end of the file (truncated?)"
            )
        if int(np.prod(shape)) == 0:
            arrays[name] = np.empty(shape, dtype=dtype)
        else:
            # copy-on-write: batches are writable views (no copy, no aliasing of the file)
            arrays[name] = np.memmap(path, dtype=dtype, mode="c", offset=start, shape=shape)
    return _checked(path, header, arrays)


def _read_jsonl(path: Path) -> RecordedStream:
    with path.open("r", encoding="utf-8") as lines:
        try:
            first = json.loads(lines.readline())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StreamFileError(f"{path}: not a streamcl stream file (no header line)") from None
        if not isinstance(first, dict) or "streamcl_stream" not in first:
            raise StreamFileError(f'{path}: first line must be {{"streamcl_stream": {{...}}}}')
        header = _header(path, first["streamcl_stream"])
        columns: dict[str, list[Any]] = {name: [] for name in (*EVENT_ARRAYS, "x")}
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                for name in EVENT_ARRAYS:
                    columns[name].append(int(event[name]))
                if header.inline:
                    columns["x"].append(event["x"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise StreamFileError(f"{path}:{number}: malformed event ({exc!r})") from None
    arrays = {name: np.asarray(columns[name], dtype=np.int64) for name in EVENT_ARRAYS}
    if header.inline:
        arrays["x"] = np.asarray(columns["x"], dtype=np.dtype(header.input_dtype))
    return _checked(path, header, arrays)


def _checked(path: Path, header: StreamHeader, arrays: dict[str, np.ndarray]) -> RecordedStream:
    n = len(arrays["y"])
    if any(len(arrays[name]) != n for name in EVENT_ARRAYS):
        raise StreamFileError(f"{path}: event arrays have different lengths")
    if n != header.num_samples:
        raise StreamFileError(f"{path}: header says {header.num_samples} events, file has {n}")
    if header.inline and ("x" not in arrays or len(arrays["x"]) != n):
        raise StreamFileError(f"{path}: inline stream without an input per event")
    return RecordedStream(
        header=header,
        id=arrays["id"],
        row=arrays["row"],
        y=arrays["y"],
        level=arrays["level"],
        task=arrays["task"],
        x=arrays.get("x") if header.inline else None,
    )


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
