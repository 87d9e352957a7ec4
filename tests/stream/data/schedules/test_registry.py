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


def test_a_task_count_no_stream_could_have_is_refused_before_anything_is_built():
    """``--tasks 1000000000`` on digits was built (24 GB, killed for memory); 11 tasks on ten
    classes made si-blurry drop every class and write a stream of no event."""
    ds = load_dataset("digits")
    with pytest.raises(ScheduleError, match="tasks: Input should be less than or equal to 100000"):
        make_schedule("si-blurry", ds, {"tasks": 10**9}, 0)
    with pytest.raises(ScheduleError, match="tasks: 50000 tasks but only 1442 samples"):
        make_schedule("si-blurry", ds, {"tasks": 50_000}, 0)
    with pytest.raises(
        ScheduleError, match=r"shows no sample of digits \(every class was dropped.*--tasks 10,"
    ):
        make_schedule("si-blurry", ds, {"tasks": 11}, 0)
