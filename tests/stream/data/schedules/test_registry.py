import pytest

from stream.data.datasets import load_dataset
from stream.data.schedules import ScheduleError, make_schedule, schedule_names


def test_known_schedules():
    assert {"disjoint", "i-blurry", "si-blurry"} <= set(schedule_names())


def test_unknown_schedule_and_bad_parameters_name_the_problem():
    ds = load_dataset("digits")
    with pytest.raises(ScheduleError, match="unknown schedule 'blurry'"):
        make_schedule("blurry", ds, {}, 0)
    with pytest.raises(ScheduleError, match="disjoint: Input should be less than or equal to 100"):
        make_schedule("si-blurry", ds, {"disjoint": 150}, 0)
    with pytest.raises(ScheduleError, match="blurry: Extra inputs are not permitted"):
        make_schedule("disjoint", ds, {"blurry": 10}, 0)
    with pytest.raises(ScheduleError, match="11 tasks but only 10 classes"):
        make_schedule("disjoint", ds, {"tasks": 11}, 0)
