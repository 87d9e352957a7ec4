"""Crafted and corrupt stream files: every one is refused with exit 2 and one line that names
the file, the byte offset (binary) or line (JSON lines), and the reason; never a crash, a
SIGSEGV or an allocation the size of a number in the file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.cli import main as cli
from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import (
    MAGIC,
    StreamFileError,
    _align,
    read_stream,
    record_schedule,
    write_stream,
)
from tests.support.cli_runner import streamcl

PREFIX = len(MAGIC) + 8


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory) -> Path:
    """A valid inline binary stream of 40 digits events (float32 inputs, shape [1, 8, 8])."""
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {"tasks": 2}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1, inline=True)
    for name in ("id", "row", "y", "level", "task"):
        setattr(stream, name, getattr(stream, name)[:40])
    stream.x = stream.x[:40]
    return write_stream(tmp_path_factory.mktemp("crafted") / "small.scl", stream)


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[len(MAGIC) : PREFIX], "little")
    return json.loads(data[PREFIX : PREFIX + size]), data[_align(PREFIX + size) :]


def assemble(header: Any, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    padding = b"\0" * (_align(PREFIX + len(text)) - PREFIX - len(text))
    return MAGIC + len(text).to_bytes(8, "little") + text + padding + body


def crafted(source: Path, target: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    header, body = split(source)
    mutate(header)
    target.write_bytes(assemble(header, body))
    return target


def set_array(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(header: dict[str, Any]) -> None:
        header["arrays"][name][key] = value

    return mutate


def set_header(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(header: dict[str, Any]) -> None:
        header[key] = value

    return mutate


BINARY_CASES = [
    ("object dtype", set_array("x", "dtype", "|O"), r"byte 16: array 'x': dtype '\|O'"),
    ("float64 ids", set_array("id", "dtype", "<f8"), "array 'id': dtype '<f8' is not one of"),
    ("negative shape", set_array("y", "shape", [-40]), "shape must be a list of counts >= 0"),
    ("wrapping shape", set_array("x", "shape", [2**32, 2**32, 2**32]), "the header implies"),
    ("shape beyond counts", set_array("x", "shape", [2**63, 2**63]), "counts >= 0"),
    ("shape too large", set_array("x", "shape", [40, 1, 2**20, 2**20]), "the header implies"),
    ("float shape", set_array("y", "shape", [40.0]), "counts >= 0"),
    ("negative offset", set_array("task", "offset", -64), "non-negative multiple of 64"),
    ("unaligned offset", set_array("task", "offset", 3), "non-negative multiple of 64"),
    ("offset past the end", set_array("task", "offset", 2**40), r"byte \d+: array 'task' needs"),
    ("unknown array", lambda h: h["arrays"].update(z={}), "unknown array 'z'"),
    ("arrays missing", lambda h: h.pop("arrays"), 'no "arrays" object'),
    ("an event array missing", lambda h: h["arrays"].pop("level"), "lacks event arrays"),
    ("huge num_tasks", set_header("num_tasks", 2**31), "num_tasks: Input should be less"),
    ("huge num_samples", set_header("num_samples", 2**62), "num_samples"),
    ("input dtype object", set_header("input_dtype", "object"), "input_dtype"),
    ("level names mismatch", set_header("level_names", ["a", "b"]), "2 level_names for 1"),
    ("header not an object", lambda h: h.clear() or h.update(x=[]), "invalid stream header"),
    # JSON booleans and floats where integers go read as 1 and 3 before
    ("boolean label delay", set_header("label_delay", True), "label_delay.int: Input should"),
    ("float label delay", set_header("label_delay", 3.0), "label_delay.int: Input should"),
    ("boolean seed", set_header("seed", True), "seed: Input should be a valid integer"),
    ("boolean inline", set_header("inline", 1), "inline: Input should be a valid boolean"),
]


@pytest.mark.parametrize(
    ("case", "mutate", "message"), BINARY_CASES, ids=[c[0] for c in BINARY_CASES]
)
def test_a_crafted_binary_header_is_exit_2_with_one_line(
    small_stream, tmp_path, capsys, case, mutate, message
):
    path = crafted(small_stream, tmp_path / "crafted.scl", mutate)
    assert cli.main(["replay", str(path), "--learner", "nmc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and "byte " in err
    assert re.search(message, err), err


def test_a_task_column_that_jumps_is_refused_at_its_byte(small_stream, tmp_path):
    header, body = split(small_stream)
    task = header["arrays"]["task"]
    start = task["offset"] + 7 * np.dtype(task["dtype"]).itemsize
    jumped = bytearray(body)
    jumped[start : start + 4] = (2**31 - 1).to_bytes(4, "little")
    path = tmp_path / "jump.scl"
    path.write_bytes(assemble(header, bytes(jumped)))
    data_start = len(path.read_bytes()) - len(body)
    with pytest.raises(StreamFileError) as refused:
        read_stream(path)
    assert str(refused.value) == (
        f"{path}: byte {data_start + start}: event 7: task 2147483647 outside [0, 1] "
        "(from the header)"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ((2**62).to_bytes(8, "little"), r"byte 8: header length 4611686018427387904 exceeds"),
        (b"\x05\0\0", "byte 8: file ends inside the header length"),
        ((20).to_bytes(8, "little") + b"{" * 20, r"byte \d+: corrupt stream header"),
        ((6).to_bytes(8, "little") + b"[1, 2]", "byte 16: the stream header must be"),
    ],
    ids=["header length 2^62", "truncated length", "corrupt JSON", "not an object"],
)
def test_a_broken_header_length_or_json_is_refused_with_its_offset(tmp_path, capsys, raw, message):
    path = tmp_path / "broken.scl"
    path.write_bytes(MAGIC + raw)
    assert cli.main(["replay", str(path), "--learner", "nmc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert re.search(message, err), err


def test_an_object_dtype_stream_is_exit_2_in_a_real_process(small_stream, tmp_path):
    """It used to be a SIGSEGV: np.memmap built Python objects out of file bytes."""
    path = crafted(small_stream, tmp_path / "object.scl", set_array("x", "dtype", "|O"))
    done = streamcl("replay", str(path), "--learner", "nmc", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"streamcl: error: {path}: byte 16: array 'x': dtype '|O' is not one of ['<f4', '|u1']"
    )


def jsonl_stream(tmp_path: Path, small_stream: Path) -> tuple[Path, list[str]]:
    path = write_stream(tmp_path / "s.jsonl", read_stream(small_stream))
    return path, path.read_text().splitlines()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": 4, "row": 1, "y": 1e30, "level": 0, "task": 0}, "'y' must be an integer >= 0"),
        ({"id": 4, "row": 1, "y": 10**30, "level": 0, "task": 0}, "'y' must be an integer"),
        ({"id": 4, "row": 1, "y": "3", "level": 0, "task": 0}, "'y' must be an integer"),
        ({"id": 4, "row": 1, "y": 3, "level": 0}, "'task' must be an integer >= 0, got missing"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 2**31 - 1}, "task 2147483647 outside"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [0.5] * 10**6}, "longer than"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [1] * 65}, "'x' has 65 values"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [[1], [1, 2]]}, "must be numbers"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [1e39] * 64}, "not a float32"),
        ([1, 2], "not a JSON object"),
        # 64 values nested otherwise than [1, 8, 8]: stacking them failed after every check
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [[0.5] * 8] * 8}, "shape (8, 8)"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": ["0.5"] * 64}, "must be numbers"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [None] * 64}, "must be numbers"),
        # numpy reads booleans among numbers as 1 and 0
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [0.5] * 63 + [True]}, "must be numbers"),
        ({"id": 4, "row": 1, "y": 3, "level": 0, "task": 0, "x": [[[1] * 7 + [False]] * 8]}, "must be numbers"),
    ],
    ids=[
        "y 1e30", "y 10^30", "y string", "task missing", "task jump", "x 10^6 long",
        "x too long", "x ragged", "x beyond float32", "not an object", "x nested otherwise",
        "x strings", "x nulls", "x with a boolean", "x nested with a boolean",
    ],
)  # fmt: skip
def test_a_malformed_jsonl_event_is_exit_2_naming_its_line(
    small_stream, tmp_path, capsys, line, message
):
    path, lines = jsonl_stream(tmp_path, small_stream)
    event = json.loads(lines[5])
    lines[5] = json.dumps({**event, **line} if isinstance(line, dict) else line)
    if isinstance(line, dict) and "task" not in line:
        lines[5] = json.dumps({k: v for k, v in json.loads(lines[5]).items() if k != "task"})
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["replay", str(path), "--learner", "nmc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}:6: " in err and message in err, err


def test_inline_inputs_may_be_flat_or_nested_in_one_file(small_stream, tmp_path):
    path, lines = jsonl_stream(tmp_path, small_stream)
    for i in (3, 9):
        event = json.loads(lines[i])
        event["x"] = np.asarray(event["x"]).reshape(-1).tolist()
        lines[i] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_stream(path).x, read_stream(small_stream).x)


# -- fuzz --------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["|O", "<f4", "|u1", "<i8", "<i4", ">f8", "V8", "S100", "O", "<M8"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = ["dtype", "shape", "offset"]
HEADER_KEYS = ["num_samples", "num_tasks", "num_classes", "input_shape", "input_dtype", "inline"]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    changes=st.lists(
        st.one_of(
            st.tuples(
                st.sampled_from(["id", "row", "y", "level", "task", "x"]),
                st.sampled_from(FIELDS),
                JSON_VALUES,
            ),
            st.tuples(st.just(None), st.sampled_from(HEADER_KEYS), JSON_VALUES),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_scl_headers_are_read_or_refused_cleanly(small_stream, tmp_path, changes):
    header, body = split(small_stream)
    for array, key, value in changes:
        if array is None:
            header[key] = value
        else:
            header["arrays"][array][key] = value
    path = tmp_path / "fuzz.scl"
    path.write_bytes(assemble(header, body))
    try:
        stream = read_stream(path)
    except StreamFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc) and "byte " in str(exc)
        return
    # Accepted: then every array is what the header says, and within the file.
    assert len(stream) == stream.header.num_samples
    assert stream.task.max(initial=0) < stream.header.num_tasks


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_scl_bytes_are_read_or_refused_cleanly(small_stream, tmp_path, data):
    raw = bytearray(small_stream.read_bytes())
    size = int.from_bytes(raw[len(MAGIC) : PREFIX], "little")
    # flips within the header length and the header, where the counts live
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(len(MAGIC), PREFIX + size - 1))
        raw[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "flipped.scl"
    path.write_bytes(bytes(raw))
    try:
        read_stream(path)
    except StreamFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("river:Agrawal?n=1000000000", r"n must be an integer in \[1, 1000000\]"),
        ("river:RandomRBF?n=1&seed=-1", r"seed must be an integer in \[0, 4294967295\]"),
        ("synthetic-hierarchy:seed=-1", "seed: Input should be greater than or equal to 0"),
        (
            "synthetic-hierarchy:branching=100x100,dim=2000,train=10,test=1",
            "more than the 4294967296 a dataset may take",
        ),
    ],
)
def test_a_header_naming_a_dataset_beyond_its_bounds_is_refused_when_read(
    small_stream, tmp_path, dataset, message
):
    """Replay builds the dataset a header names: a 191-byte stream naming 10^9 Agrawal samples
    used to generate for ever before anything was compared."""
    binary = crafted(small_stream, tmp_path / "d.scl", set_header("dataset", dataset))
    jsonl = tmp_path / "d.jsonl"
    header = {**split(small_stream)[0], "dataset": dataset, "num_samples": 0}
    header.pop("arrays")
    jsonl.write_text(json.dumps({"streamcl_stream": header}) + "\n")
    for path, where in ((binary, f"{binary}: byte 16: "), (jsonl, f"{jsonl}:1: ")):
        with pytest.raises(StreamFileError) as refused:
            read_stream(path)
        assert str(refused.value).startswith(
            f"{where}the header's dataset: {dataset.partition(':')[0]}:"
        )
        assert re.search(message, str(refused.value)), refused.value


def test_a_header_naming_a_dataset_beyond_its_bounds_is_exit_2(small_stream, tmp_path, capsys):
    dataset = "synthetic-hierarchy:seed=-1"  # was exit 1, "failed: ValueError"
    path = crafted(small_stream, tmp_path / "d.scl", set_header("dataset", dataset))
    assert cli.main(["replay", str(path), "--learner", "nmc"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert (
        f"{path}: byte 16: the header's dataset: synthetic-hierarchy: invalid options: seed" in line
    )
