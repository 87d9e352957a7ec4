"""stream/observe/telemetry.py: the metrics of docs/metrics.md carry the loop's own figures; health is a heartbeat."""

from __future__ import annotations

import math

import pytest

from stream.observe.telemetry import Telemetry
from tests.support import small_stream
from tests.support.clock import Clock


def _value(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("levels", [1, 2])
def test_observer_exports_the_loops_figures(levels):
    telemetry = Telemetry()
    loop = small_stream.run(levels, [telemetry.observer("nmc")])
    summary = loop.summary()
    v = lambda name, **labels: _value(telemetry, name, **labels)  # noqa: E731

    assert v("streamcl_samples_total", learner="nmc") == loop.samples_seen == 80
    batches = len(small_stream.batches(levels))
    assert v("streamcl_update_seconds_count", learner="nmc") == batches
    assert v("streamcl_update_seconds_bucket", learner="nmc", le="+Inf") == batches
    assert v("streamcl_update_seconds_sum", learner="nmc") == pytest.approx(
        loop.learn_seconds, rel=1e-9
    )
    assert (
        v("streamcl_prequential_accuracy", learner="nmc", window="cumulative")
        == summary["prequential_accuracy"]
    )
    assert (
        v("streamcl_prequential_accuracy", learner="nmc", window="20")
        == summary["prequential_accuracy_rolling"]
    )
    # The stream ends with a task-end evaluation: the last a(t) is A_last.
    assert v("streamcl_anytime_accuracy", learner="nmc", level="all") == summary["A_last"]
    assert v("streamcl_auc_accuracy", learner="nmc", level="all") == summary["A_auc"]
    assert v("streamcl_memory_samples", learner="nmc") == 0
    for level, name in enumerate(loop.problem.level_names):
        per_level = summary["per_level"][name] if levels == 2 else summary
        assert v("streamcl_anytime_accuracy", learner="nmc", level=name) == per_level["A_last"]
        assert v("streamcl_auc_accuracy", learner="nmc", level=name) == pytest.approx(
            per_level["A_auc"], rel=1e-12
        )
        assert v("streamcl_forgetting", learner="nmc", level=name) == loop.running_forgetting(level)
    # Task 0 labels fine classes 0-1 (with a hierarchy, by their coarse parent 0); task 1, 2-3.
    seen = {"label": 4} if levels == 1 else {"coarse": 1, "fine": 2}
    assert {name: v("streamcl_seen_classes", level=name) for name in seen} == seen
    if levels == 2:
        fine = summary["per_level"]["fine"]
        assert v("streamcl_anytime_accuracy", learner="nmc", level="fine") != summary["A_last"]
        assert v("streamcl_auc_accuracy", learner="nmc", level="fine") == pytest.approx(
            fine["A_auc"]
        )


def test_an_approximate_memory_index_exports_its_calibrated_nprobe_and_recall():
    telemetry = Telemetry()
    memory = {"capacity": 100, "retrieval": "nearest", "index": "ivf"}
    options = {"backbone": {"hidden": [16], "out_dim": 8}, "memory": memory}
    loop = small_stream.run(1, [telemetry.observer("er")], learner="er", options=options)
    calibration = loop.learner.memory_index_calibration
    assert calibration is not None and calibration.recall >= 0.95
    assert _value(telemetry, "streamcl_memory_index_recall", learner="er") == calibration.recall
    assert _value(telemetry, "streamcl_memory_index_nprobe", learner="er") == calibration.nprobe
    exact = Telemetry()
    small_stream.run(1, [exact.observer("nmc")])
    assert _value(exact, "streamcl_memory_index_recall", learner="nmc") is None


def test_each_telemetry_has_its_own_registry():
    first, second = Telemetry(), Telemetry()
    small_stream.run(1, [first.observer("nmc")])
    assert _value(first, "streamcl_samples_total", learner="nmc") == 80
    assert _value(second, "streamcl_samples_total", learner="nmc") is None


def _names(telemetry: Telemetry) -> set[str]:
    return {family.name for family in telemetry.registry.collect()}


def test_daemon_series_exist_only_once_reported():
    telemetry = Telemetry()
    small_stream.run(1, [telemetry.observer("nmc")])
    samples = {s.name for family in telemetry.registry.collect() for s in family.samples}
    assert not samples & {
        "streamcl_last_checkpoint_timestamp_seconds",
        "streamcl_broker_up",
        "streamcl_invalid_messages_total",
        "streamcl_consumer_lag",
    }
    telemetry.checkpoint_written(1700000000.5)
    telemetry.set_broker_up(False)
    telemetry.invalid_message("nan")
    telemetry.invalid_message("nan")
    telemetry.invalid_message("undecodable")
    telemetry.set_consumer_lag("samples", 2, 17)
    telemetry.checkpoint_written(1700000100.0)  # a second report registers nothing twice
    telemetry.set_broker_up(True)
    assert _value(telemetry, "streamcl_last_checkpoint_timestamp_seconds") == 1700000100.0
    assert _value(telemetry, "streamcl_broker_up") == 1
    assert _value(telemetry, "streamcl_invalid_messages_total", reason="nan") == 2
    assert _value(telemetry, "streamcl_invalid_messages_total", reason="undecodable") == 1
    assert _value(telemetry, "streamcl_consumer_lag", topic="samples", partition="2") == 17
    assert _value(telemetry, "streamcl_build_info", version=next(iter(_versions(telemetry)))) == 1


def _versions(telemetry: Telemetry) -> set[str]:
    return {
        s.labels["version"]
        for family in telemetry.registry.collect()
        if family.name == "streamcl_build_info"
        for s in family.samples
    }


def test_health_is_a_heartbeat():
    clock = Clock()
    telemetry = Telemetry(clock=clock)
    assert telemetry.health(10).state == "progressing"
    clock.now += 10.5
    stalled = telemetry.health(10)
    assert (stalled.state, stalled.ok) == ("stalled", False)
    assert stalled.to_json() == {
        "status": "stalled",
        "state": "stalled",
        "seconds_since_progress": 10.5,
        "stall_seconds": 10,
    }
    # An empty poll of the source is progress too: an idle daemon stays healthy.
    telemetry.progressed()
    clock.now += 9
    assert telemetry.health(10).ok
    telemetry.loop_finished()
    clock.now += 1e6
    finished = telemetry.health(10)
    assert (finished.state, finished.ok) == ("finished", True)
    # A loop that runs again after finishing is watched again.
    telemetry.progressed()
    clock.now += 11
    assert telemetry.health(10).state == "stalled"


def test_the_loop_beats_and_finishes():
    clock = Clock()
    telemetry = Telemetry(clock=clock)
    clock.now += 500
    assert not telemetry.health(100).ok
    small_stream.run(1, [telemetry.observer("nmc")])
    assert telemetry.health(100).state == "finished"
    assert math.isclose(telemetry.last_progress, clock.now)


def test_every_prequential_window_and_drift_events_are_exported():
    import torch

    from learners import registry
    from learners.base import Problem
    from stream.engine.batch import Batch
    from stream.engine.drift_detection import DriftConfig
    from stream.engine.event_loop import EventLoop, LoopConfig

    telemetry = Telemetry()
    problem = Problem(input_shape=(2,), num_classes=(2,))
    config = LoopConfig(eval_period=None, prequential_windows=[50, 500], drift=DriftConfig())
    loop = EventLoop(
        registry.create("nmc", problem), problem, config, observers=[telemetry.observer("nmc")]
    )
    generator = torch.Generator().manual_seed(0)
    side = torch.randint(0, 2, (3000,), generator=generator)
    x = torch.randn(3000, 2, generator=generator) * 0.3 + side.unsqueeze(1) * 2.0
    y = torch.where(torch.arange(3000) < 1500, side, 1 - side)  # labels swap half way
    for start in range(0, 3000, 16):
        rows = slice(start, start + 16)
        loop.process(Batch(x[rows], y[rows], torch.zeros(len(y[rows]), dtype=torch.long)))
    for window, value in loop.prequential_values().items():
        assert (
            _value(telemetry, "streamcl_prequential_accuracy", learner="nmc", window=window)
            == value
        )
    assert loop.drift_events >= 1
    assert _value(telemetry, "streamcl_drift_events_total", learner="nmc") == loop.drift_events


def test_no_drift_series_without_drift_detection():
    telemetry = Telemetry()
    small_stream.run(1, [telemetry.observer("nmc")])
    assert _value(telemetry, "streamcl_drift_events_total", learner="nmc") is None
