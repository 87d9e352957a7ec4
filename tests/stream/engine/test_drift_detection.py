"""Drift detection on the prequential error stream (stream/engine/drift_detection.py) and the drift actions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from structlog.testing import capture_logs

from learners import registry
from learners.base import Problem
from learners.capabilities import DriftAction
from learners.state.safetensors_io import state_from_bytes, state_to_bytes
from memory import MemoryConfig, ReplayMemory
from stream.data.datasets import as_float_tensor, load_dataset
from stream.engine.batch import Batch
from stream.engine.drift_detection import DriftConfig, DriftConfigError, DriftMonitor
from stream.engine.event_loop import MAX_DRIFT_POSITIONS, EventLoop, LoopConfig

POSITION, WIDTH, SAMPLES = 3000, 50, 6000
# ADWIN's delay on a jump of the error rate from a few percent to tens of percent is tens of
# samples; the bound leaves room without tying the test to ADWIN's internals.
MAX_DELAY = 300


def batches(x, y, size=16):
    for start in range(0, len(y), size):
        rows = slice(start, start + size)
        yield Batch(x[rows], y[rows], torch.zeros(len(y[rows]), dtype=torch.long))


def run_river(spec, learner="river:tree.HoeffdingTreeClassifier", drift=None):
    dataset = load_dataset(spec)
    problem = dataset.problem()
    config = LoopConfig(eval_period=None, drift=drift or DriftConfig())
    loop = EventLoop(registry.create(learner, problem), problem, config, learner_name=learner)
    x, y = as_float_tensor(dataset.X_train), torch.from_numpy(dataset.y_train)
    for batch in batches(x, y):
        loop.process(batch)
    return loop


@pytest.mark.parametrize("seed", [1, 2])
def test_concept_drift_stream_is_detected_soon_after_its_position_and_never_without_it(seed):
    base = f"river:Agrawal?n={SAMPLES}&seed={seed}&test_every=0"
    drifting = (
        f"{base}&drift_position={POSITION}&drift_width={WIDTH}&drift.classification_function=2"
    )
    with capture_logs() as logs:
        detected = run_river(drifting)
    assert detected.drift_events >= 1
    first = detected.drift.positions[0]
    assert POSITION - WIDTH // 2 <= first <= POSITION + MAX_DELAY, detected.drift.positions
    drift_logs = [e for e in logs if e["event"] == "drift_detected"]
    assert drift_logs[0]["sample"] == first
    assert drift_logs[0]["learner"] == "river:tree.HoeffdingTreeClassifier"
    stationary = run_river(base)
    assert stationary.samples_seen == detected.samples_seen == SAMPLES
    assert stationary.drift_events == 0, stationary.drift.positions
    summary = detected.summary()
    assert summary["drift_events"] == detected.drift_events
    assert summary["drift_positions"] == detected.drift.positions


def test_falls_of_the_error_are_not_drifts_unless_asked():
    errors = np.array([1] * 300 + [0] * 300, dtype=np.int8)
    positions = np.arange(1, 601)
    rising_only = DriftMonitor(DriftConfig(), "x")
    assert rising_only.update(errors, positions) == []
    any_change = DriftMonitor(DriftConfig(direction="any"), "x")
    assert any_change.update(errors, positions) != []
    assert DriftMonitor(DriftConfig(), "x").update(errors[::-1].copy(), positions) != []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"detector": "NoSuch"}, "not a river drift detector"),
        ({"detector": "os.system"}, "river has no module"),
        ({"detector": "ADWIN", "params": {"bogus": 1}}, "ADWIN"),
        ({"detector": "KSWIN"}, "both ways"),
        ({"detector": "PageHinkley"}, "both ways"),
        ({"action": "explode"}, "action"),
    ],
)
def test_bad_drift_configs_name_the_problem(options, message):
    with pytest.raises(ValidationError, match=message):
        DriftConfig.model_validate(options)


@pytest.mark.parametrize(
    "options",
    [
        {"detector": "KSWIN", "direction": "any", "params": {"seed": 1}},
        {"detector": "PageHinkley", "params": {"mode": "up"}},
        {"detector": "binary.DDM"},
        {"detector": "river.drift.binary.EDDM"},
    ],
)
def test_other_river_detectors_are_accepted(options):
    monitor = DriftMonitor(DriftConfig.model_validate(options), "x")
    monitor.update(np.zeros(50, dtype=np.int8), np.arange(1, 51))


def test_unsupported_action_is_refused_before_the_stream_starts():
    problem = Problem(input_shape=(2,), num_classes=(2,))
    config = LoopConfig(drift=DriftConfig(action=DriftAction.GROW_RECENT))
    with pytest.raises(DriftConfigError, match="does not support drift action 'grow_recent'"):
        EventLoop(registry.create("nmc", problem), problem, config)


def swapped_blobs(n=4000, swap_at=2000, seed=0):
    """Two Gaussian blobs whose labels swap at ``swap_at``: a sudden real concept drift."""
    generator = torch.Generator().manual_seed(seed)
    side = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, 4, generator=generator) * 0.5 + side.unsqueeze(1) * 2.0
    y = torch.where(torch.arange(n) < swap_at, side, 1 - side)
    return x, y


def run_nmc(action):
    problem = Problem(input_shape=(4,), num_classes=(2,))
    config = LoopConfig(
        eval_period=None, prequential_windows=[500], drift=DriftConfig(action=action)
    )
    loop = EventLoop(registry.create("nmc", problem), problem, config)
    x, y = swapped_blobs()
    for batch in batches(x, y):
        loop.process(batch)
    return loop


def test_nmc_reset_on_drift_recovers_from_a_label_swap():
    kept, reset = run_nmc(DriftAction.NONE), run_nmc(DriftAction.RESET)
    assert kept.drift.positions == reset.drift.positions[:1] and kept.drift_events >= 1
    assert reset.learner.counts[0].sum() < 4000, "the statistics restarted at the detection"
    # Without the reset, the class means are dragged across slowly; with it they restart.
    assert reset.prequential.rolling_at(500) > 0.95
    assert kept.prequential.rolling_at(500) < 0.5


def test_er_grow_recent_restarts_the_reservoir_count():
    problem = Problem(input_shape=(4,), num_classes=(2,))
    er = registry.create("er", problem, {**registry.get("er").check_config, "seed": 1})
    x, y = swapped_blobs(200)
    er.learn(x, y, torch.zeros_like(y))
    assert er.memory.seen == 200
    er.on_drift(DriftAction.GROW_RECENT)
    assert er.memory.seen == 200 and er.memory.reservoir_start == 150
    balanced = {**registry.get("er").check_config, "memory": {"policy": "class_balanced"}}
    assert registry.create("er", problem, balanced).drift_actions == frozenset()


def recent_share(favour: bool) -> float:
    memory = ReplayMemory(MemoryConfig(capacity=100), seed=3)
    old = torch.zeros(1000, 1)
    memory.add(old, torch.zeros(1000, dtype=torch.long), torch.zeros(1000, dtype=torch.long))
    if favour:
        memory.favour_recent()
    new = torch.ones(100, 1)
    memory.add(new, torch.ones(100, dtype=torch.long), torch.zeros(100, dtype=torch.long))
    return float(memory.y[: len(memory)].float().mean())


def test_favour_recent_grows_the_share_of_samples_after_the_drift():
    # Expected shares after 100 new samples: ~9% as a plain reservoir, ~50% after the restart.
    assert recent_share(favour=False) < 0.2
    assert recent_share(favour=True) > 0.35


def test_resumed_loop_detects_exactly_as_an_uninterrupted_one():
    problem = Problem(input_shape=(4,), num_classes=(2,))
    config = LoopConfig(eval_period=None, drift=DriftConfig(action=DriftAction.RESET))
    x, y = swapped_blobs()
    whole = EventLoop(registry.create("nmc", problem), problem, config)
    for batch in batches(x, y):
        whole.process(batch)
    first = EventLoop(registry.create("nmc", problem), problem, config)
    for batch in batches(x[:2016], y[:2016]):
        first.process(batch)
    learner_state = state_from_bytes(state_to_bytes(first.learner.state_dict()))
    loop_state = json.loads(json.dumps(first.state_dict()))
    resumed = EventLoop(registry.create("nmc", problem), problem, config)
    resumed.learner.load_state_dict(learner_state)
    resumed.load_state_dict(loop_state)
    for batch in batches(x[2016:], y[2016:]):
        resumed.process(batch)
    assert resumed.drift.positions == whole.drift.positions
    assert resumed.prequential_values() == whole.prequential_values()


def test_a_monitor_that_keeps_the_newest_positions_counts_every_event():
    """A daemon's monitor (``keep``) holds a bounded state over months of drifts; the count is
    exact, and the kept positions survive a checkpoint with their bound."""
    monitor = DriftMonitor(DriftConfig(), "nmc", keep=3)
    rng = np.random.default_rng(0)
    errors = np.concatenate([rng.random(400) < rate for rate in [0.0, 1.0] * 6]).astype(float)
    monitor.update(errors, np.arange(1, len(errors) + 1))
    assert monitor.events > 3 and len(monitor.positions) == 3
    unbounded = DriftMonitor(DriftConfig(), "nmc")
    unbounded.update(errors, np.arange(1, len(errors) + 1))
    assert monitor.positions == unbounded.positions[-3:]
    assert unbounded.events == monitor.events == len(unbounded.positions)
    again = DriftMonitor(DriftConfig(), "nmc", keep=3)
    again.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert again.positions == monitor.positions


def test_a_loop_without_its_history_bounds_the_drift_positions():
    problem = Problem(input_shape=(4,), num_classes=(2,))
    loop = EventLoop(
        registry.create("nmc", problem),
        problem,
        LoopConfig(drift=DriftConfig()),
        keep_history=False,
    )
    assert loop.drift is not None and loop.drift.keep == MAX_DRIFT_POSITIONS
