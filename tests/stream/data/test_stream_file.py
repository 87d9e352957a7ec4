import json
from dataclasses import replace

import numpy as np
import pytest

from stream.data.datasets import load_dataset
from stream.data.schedules import make_schedule
from stream.data.stream_file import StreamFileError, read_stream, record_schedule, write_stream
from stream.sources.file_source import task_batches


@pytest.fixture(scope="module")
def recorded():
    ds = load_dataset("digits")
    schedule, params = make_schedule("si-blurry", ds, {"tasks": 3}, seed=7)
    return ds, record_schedule(ds, schedule, "si-blurry", params.model_dump(), 7)


def assert_same(a, b):
    assert a.header.model_dump() == b.header.model_dump()
    for name in ("id", "row", "y", "level", "task"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    if a.x is None:
        assert b.x is None
    else:
        assert np.array_equal(a.x, b.x)


@pytest.mark.parametrize("suffix", [".jsonl", ".scl"])
def test_round_trip_keeps_header_and_events(tmp_path, recorded, suffix):
    _, stream = recorded
    path = write_stream(tmp_path / f"s{suffix}", stream)
    back = read_stream(path)
    assert_same(stream, back)
    assert back.header.dataset == "digits" and back.header.schedule == "si-blurry"
    assert back.header.seed == 7 and back.header.params["tasks"] == 3
    assert back.header.dataset_fingerprint["n_train"] == 1442


@pytest.mark.parametrize("suffix", [".jsonl", ".scl"])
def test_inline_inputs_round_trip(tmp_path, suffix):
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1, inline=True)
    back = read_stream(write_stream(tmp_path / f"inline{suffix}", stream))
    assert back.x.shape == (len(schedule), 1, 8, 8)
    assert np.array_equal(back.x, ds.X_train[schedule.rows])


def test_jsonl_is_readable_by_people(tmp_path, recorded):
    _, stream = recorded
    lines = (write_stream(tmp_path / "s.jsonl", stream)).read_text().splitlines()
    assert "streamcl_stream" in json.loads(lines[0])
    assert set(json.loads(lines[1])) == {"id", "row", "y", "level", "task"}


def test_binary_form_is_detected_by_magic_not_suffix(tmp_path, recorded):
    _, stream = recorded
    path = write_stream(tmp_path / "s.bin", stream)
    path.rename(tmp_path / "renamed.jsonl")
    assert_same(stream, read_stream(tmp_path / "renamed.jsonl"))


def test_truncated_binary_is_refused(tmp_path, recorded):
    _, stream = recorded
    path = write_stream(tmp_path / "s.scl", stream)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StreamFileError, match="truncated"):
        read_stream(path)


def test_malformed_jsonl_names_the_line(tmp_path, recorded):
    _, stream = recorded
    path = write_stream(tmp_path / "s.jsonl", stream)
    lines = path.read_text().splitlines()
    lines[5] = '{"id": 4, "row": "x"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StreamFileError, match=r"s.jsonl:6: malformed event"):
        read_stream(path)


def test_not_a_stream_and_missing_files(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(StreamFileError, match="first line"):
        read_stream(tmp_path / "x.jsonl")
    with pytest.raises(StreamFileError, match="does not exist"):
        read_stream(tmp_path / "none.scl")


def test_event_count_must_match_header(tmp_path, recorded):
    _, stream = recorded
    path = write_stream(tmp_path / "s.jsonl", stream)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(StreamFileError, match="header says"):
        read_stream(path)


def test_batches_checked_up_front_are_marked_validated_and_match_unchecked(recorded):
    ds, stream = recorded
    problem = ds.problem()
    checked = list(task_batches(stream, ds, 16, problem=problem))
    unchecked = list(task_batches(stream, ds, 16))
    assert all(b.validated for b in checked) and not any(b.validated for b in unchecked)
    assert len(checked) == len(unchecked)
    for a, b in zip(checked, unchecked, strict=True):
        assert torch_equal(a.x, b.x) and torch_equal(a.y, b.y)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("y", 10, "event 5 has label 10 outside"), ("level", 1, "event 5 has level 1")],
)
def test_a_bad_event_is_refused_before_any_batch(recorded, field, value, message):
    ds, stream = recorded
    bad = getattr(stream, field).copy()
    bad[5] = value
    problem = ds.problem()
    with pytest.raises(StreamFileError, match=message):
        next(task_batches(replace(stream, **{field: bad}), ds, 16, problem=problem))


def test_non_finite_inline_inputs_are_refused_before_any_batch():
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1, inline=True)
    stream.x = stream.x.astype(np.float32)
    stream.x[7, 0, 3, 3] = np.nan
    problem = ds.problem()
    with pytest.raises(StreamFileError, match="event 7 has NaN or inf"):
        next(task_batches(stream, ds, 16, problem=problem))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("writeable", [True, False])
def test_the_finite_check_is_exact_at_the_extremes_of_each_float_type(dtype, writeable):
    """Whole rows of the largest finite value (whose plain sum overflows) pass; one NaN, inf or
    -inf among them is found in its event, whichever path the array takes."""
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1, inline=True)
    problem = ds.problem()
    for bad, value in [(None, None), (4, np.nan), (11, np.inf), (0, -np.inf)]:
        x = np.full(stream.x.shape, np.finfo(dtype).max, dtype=dtype)
        x[3] = -np.finfo(dtype).max
        x[5] = np.finfo(dtype).tiny / 2  # subnormal
        if bad is not None:
            x[bad, 0, 7, 7] = value
        x.flags.writeable = writeable
        replayed = replace(stream, x=x)
        if bad is None:
            assert len(list(task_batches(replayed, ds, 16, problem=problem))) > 0
        else:
            with pytest.raises(StreamFileError, match=f"event {bad} has NaN or inf"):
                next(task_batches(replayed, ds, 16, problem=problem))


def torch_equal(a, b):
    return bool((a == b).all())


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize(("batch_size", "start"), [(1, 0), (16, 0), (16, 37), (500, 3), (64, -1)])
def test_batches_tile_the_stream_from_start_and_never_cross_a_task(
    recorded, inline, batch_size, start
):
    ds, stream = recorded
    start = start % len(stream)  # -1: the last event alone
    if inline:
        stream = replace(stream, x=ds.X_train[stream.row].astype(np.float32))
    batches = list(task_batches(stream, ds, batch_size, start=start))
    ids = np.concatenate([b.ids.numpy() for b in batches])
    assert np.array_equal(ids, stream.id[start:])
    position = start
    for b in batches:
        n = len(b)
        assert 0 < n <= batch_size
        assert len(set(b.task.tolist())) == 1
        assert b.task_id == b.first_task() == b.task.tolist()[0]  # the loop reads task_id
        assert np.array_equal(b.y.numpy(), stream.y[position : position + n])
        assert np.array_equal(b.x.numpy(), ds.X_train[stream.row[position : position + n]])
        position += n
    boundaries = np.flatnonzero(np.diff(stream.task[start:])) + 1
    assert len(batches) == sum(
        -(-(hi - lo) // batch_size)
        for lo, hi in zip([0, *boundaries], [*boundaries, len(stream) - start], strict=True)
    )


@pytest.mark.parametrize(
    ("values", "bad"), [((3e38, 3e38), None), ((np.inf, -np.inf), 2), ((3e38, np.nan), 9)]
)
def test_the_finite_check_tells_an_overflowing_sum_from_non_finite_inputs(values, bad):
    """One sum decides the usual case; huge finite values overflow it and are then decided
    exactly, with no warning (pytest runs with warnings as they come)."""
    ds = load_dataset("digits")
    schedule, params = make_schedule("disjoint", ds, {}, seed=1)
    stream = record_schedule(ds, schedule, "disjoint", params.model_dump(), 1, inline=True)
    stream.x = stream.x.astype(np.float32)
    stream.x[2, 0, 1, 1], stream.x[9, 0, 4, 4] = values
    problem = ds.problem()
    if bad is None:
        assert len(list(task_batches(stream, ds, 16, problem=problem))) > 0
    else:
        with pytest.raises(StreamFileError, match=f"event {bad} has NaN or inf"):
            next(task_batches(stream, ds, 16, problem=problem))
