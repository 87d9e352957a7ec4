"""The join window of stream/engine/label_join.py: bounded by count, age and bytes; JSON state."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from stream.engine.label_join import LabelJoin, encode_input


def _x(value: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, value, np.float32)


def test_a_label_takes_its_request_once_with_the_prediction_served():
    join = LabelJoin()
    join.add(5, _x(1), [2, 7], served_at=10.0, task=3)
    pending = join.take(5)
    assert pending.predicted == [2, 7] and pending.served_at == 10.0 and pending.task == 3
    np.testing.assert_array_equal(pending.x, _x(1))
    assert join.take(5) is None and len(join) == 0 and join.bytes == 0


def test_the_oldest_requests_expire_beyond_the_count():
    join = LabelJoin(max_pending=3)
    expired = [join.add(i, _x(i), [0], served_at=float(i)) for i in range(5)]
    assert expired == [[], [], [], [0], [1]]
    assert list(join.pending) == [2, 3, 4]


def test_requests_older_than_the_age_expire():
    join = LabelJoin(max_age_seconds=10)
    for i in range(5):
        join.add(i, _x(i), [0], served_at=float(i * 5))
    assert join.expire(now=21.0) == [0, 1, 2]  # served at 0, 5, 10: older than 10 s at 21
    assert list(join.pending) == [3, 4]
    assert join.expire(now=21.0) == []


def test_the_inputs_stay_within_the_byte_bound():
    join = LabelJoin(max_bytes=40)  # two 16-byte inputs fit, a third does not
    join.add(0, _x(0), [0], 0.0)
    join.add(1, _x(1), [0], 0.0)
    assert join.add(2, _x(2), [0], 0.0) == [0]
    assert join.bytes == 32
    assert join.add(3, _x(3, dim=20), [0], 0.0) == [3]  # 80 bytes: never held
    assert list(join.pending) == [1, 2]


def test_a_repeated_id_replaces_the_earlier_request():
    join = LabelJoin()
    join.add(1, _x(1), [0], 0.0)
    assert join.add(1, _x(2), [4], 1.0) == [1]
    assert join.take(1).predicted == [4] and len(join) == 0


def test_the_window_round_trips_through_json_exactly():
    join = LabelJoin()
    rng = np.random.default_rng(0)
    for i in range(4):
        join.add(i * 3, rng.normal(size=(2, 3)).astype(np.float32), [i, -1], i + 0.5, i)
    restored = LabelJoin()
    restored.load_state_dict(json.loads(json.dumps(join.state_dict())))
    assert list(restored.pending) == list(join.pending) and restored.bytes == join.bytes
    for id, pending in join.pending.items():
        again = restored.pending[id]
        assert again.x.dtype == np.float32 and np.array_equal(again.x, pending.x)
        assert (again.predicted, again.served_at, again.task) == (
            pending.predicted, pending.served_at, pending.task,
        )  # fmt: skip


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        LabelJoin(max_pending=0)
    with pytest.raises(ValueError, match="max_age_seconds"):
        LabelJoin(max_age_seconds=0)


def test_partitions_round_trip_and_a_window_keeps_only_the_partitions_it_is_given():
    join = LabelJoin()
    for i in range(6):
        join.add(i, np.full(2, i, np.float32), [i % 3], served_at=float(i), partition=i % 2)
    state = json.loads(json.dumps(join.state_dict()))
    again = LabelJoin()
    again.load_state_dict(state)
    assert [p.partition for p in again.pending.values()] == [0, 1, 0, 1, 0, 1]
    assert again.keep_partitions([1]) == 3
    assert list(again.pending) == [1, 3, 5] and again.bytes == 3 * 8
    # a window written before partitions were kept reads as partition -1
    for request in state["requests"]:
        del request["partition"]
    again.load_state_dict(state)
    assert {p.partition for p in again.pending.values()} == {-1}
    assert again.keep_partitions([0], keep_unknown=True) == 0 and len(again) == 6  # rank 0
    assert again.keep_partitions([0]) == 6 and len(again) == 0


def test_a_restored_window_fits_into_smaller_bounds_oldest_first():
    join = LabelJoin()
    for i in range(5):
        join.add(i, np.zeros(4, np.float32), [0], served_at=float(i))
    smaller = LabelJoin(max_pending=3)
    smaller.load_state_dict(join.state_dict())
    assert smaller.shrink() == [0, 1] and list(smaller.pending) == [2, 3, 4]
    assert smaller.bytes == 3 * 16


def _request(**change) -> dict:
    request = {"id": 4, **encode_input(_x(0.5, 3)), "predicted": [1], "served_at": 2.0,
               "task": -1, "partition": 0}  # fmt: skip
    return {**request, **change}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": -1}, "id -1"),
        ({"id": "4"}, "id 4 is not an integer"),
        ({"id": True}, "id True"),
        ({"x": "AAAA"}, "not base64 of 3 float32"),
        ({"x": "!" * 16}, "not valid base64"),
        (encode_input(np.array([0.0, np.nan, 1.0], np.float32)), "NaN"),
        (encode_input(np.array([np.inf, 0.0, 1.0], np.float32)), "infinity"),
        (encode_input(_x(0.5, 2)), "shape (2,), this problem's is (3,)"),
        ({"shape": [3, 1]}, "shape (3, 1)"),
        ({"shape": [0]}, "is not a shape"),
        ({"shape": [1 << 40]}, "is not a shape"),
        ({"shape": "3"}, "is not a shape"),
        ({"predicted": []}, "no served class"),
        ({"predicted": [3]}, "do not fit"),
        ({"predicted": [1, 0]}, "do not fit"),
        ({"predicted": [-2]}, "served class -2"),
        ({"predicted": [1.5]}, "served class 1.5"),
        ({"served_at": float("nan")}, "served_at nan"),
        ({"served_at": "2"}, "served_at 2"),
        ({"task": -2}, "task -2"),
        ({"partition": None}, "partition None"),
    ],
)
def test_a_window_a_checkpoint_could_not_have_written_is_refused_and_changes_nothing(
    change, message
):
    """Restored requests are learned once their labels come, as checked on arrival: a window
    with an input of another shape, a NaN, or a served class outside the label space is refused
    before anything changes (before, a NaN input was learned into the model)."""
    join = LabelJoin()
    join.add(9, _x(1, 3), [2], served_at=1.0)
    state = {"requests": [_request(id=1), _request(**change)]}
    with pytest.raises(ValueError, match=rf"request 1: .*{re.escape(message)}"):
        join.load_state_dict(state, input_shape=(3,), num_classes=(3,))
    assert list(join.pending) == [9] and join.bytes == 12


def test_a_window_is_refused_whole_when_it_is_not_a_list_of_requests():
    join = LabelJoin()
    for state in ({}, {"requests": "x"}, None, {"requests": ["x"]}):
        with pytest.raises(ValueError, match="label join window"):
            join.load_state_dict(state)  # type: ignore[arg-type]
