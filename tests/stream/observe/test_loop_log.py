"""stream/observe/loop_log.py: the loop's log lines, each with learner and samples."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from stream.observe.loop_log import LoopLogger
from tests.support import small_stream
from tests.support.logging_state import restore_logging  # noqa: F401 - autouse fixture


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture
def json_logs():
    from stream.observe.log_setup import configure_logging

    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    return out


class Ticking:
    """A clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_every_line_has_learner_and_samples(json_logs):
    loop = small_stream.run(1, [LoopLogger("nmc", progress_seconds=1e9)])
    lines = _lines(json_logs)
    assert lines and all(
        line["learner"] == "nmc" and isinstance(line["samples"], int) for line in lines
    )
    assert [line["samples"] for line in lines if line["event"] == "evaluation"] == [
        16,
        32,
        48,
        64,
        80,
    ]
    task_ends = [line for line in lines if line["event"] == "task_end"]
    assert [(t["task"], t["samples"]) for t in task_ends] == [(0, 40), (1, 80)]
    assert task_ends[0]["seen_classes"] == {"label": 2}
    (finished,) = [line for line in lines if line["event"] == "stream_finished"]
    summary = loop.summary()
    assert finished["samples"] == 80
    for key in ("A_auc", "A_avg", "A_last", "F_last", "prequential_accuracy"):
        assert finished[key] == round(summary[key], 4)
    assert finished["level"] == "info" and finished["logger"] == "streamcl.loop"


def test_hierarchy_lines_give_each_levels_accuracy(json_logs):
    loop = small_stream.run(2, [LoopLogger("nmc", progress_seconds=1e9)])
    last = [line for line in _lines(json_logs) if line["event"] == "task_end"][-1]
    per_level = loop.summary()["per_level"]
    assert last["level_accuracy"] == {
        name: round(per_level[name]["A_last"], 4) for name in ("coarse", "fine")
    }
    assert last["seen_classes"] == {"coarse": 1, "fine": 2}


def test_periodic_progress_with_throughput(json_logs):
    # One tick per batch: 10 batches of 8, a progress line every 3 s of the fake clock.
    small_stream.run(1, [LoopLogger("nmc", progress_seconds=3, clock=Ticking())])
    progress = [line for line in _lines(json_logs) if line["event"] == "progress"]
    assert [p["samples"] for p in progress] == [24, 48, 72]
    assert all(p["samples_per_second"] == pytest.approx(8.0) for p in progress)
    assert {"prequential_accuracy", "prequential_accuracy_rolling", "memory_samples"} <= set(
        progress[0]
    )


def test_info_level_leaves_out_periodic_evaluations():
    from stream.observe.log_setup import configure_logging

    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    small_stream.run(1, [LoopLogger("nmc", progress_seconds=1e9)])
    assert [line["event"] for line in _lines(out)] == ["task_end", "task_end", "stream_finished"]


def test_bound_fields_and_context_reach_the_loops_lines(json_logs):
    logger = LoopLogger("nmc", progress_seconds=1e9)
    logger.bind(run="r1")
    with structlog.contextvars.bound_contextvars(topic="samples", partition=0):
        small_stream.run(1, [logger])
    lines = _lines(json_logs)
    assert all(line["run"] == "r1" and line["topic"] == "samples" for line in lines)
