"""Prometheus metrics of a streamcl process (listed in docs/metrics.md), fed by the event loop and the daemon.

Every metric lives in the ``Telemetry`` object's own registry, so several loops (or tests) in
one process do not collide. ``TelemetryObserver`` turns the loop's batches and evaluations into
metric updates; the daemon reports consumer lag, invalid messages, broker state and checkpoints
through the methods here. ``stream.observe.http_endpoint`` serves the registry over HTTP.

Series that only a daemon can fill exist only once the daemon reports them: a replay exports no
consumer lag, no invalid-message counts, no broker state, no checkpoint time (an unset
``streamcl_last_checkpoint_timestamp_seconds`` would read as a checkpoint in 1970) and no
storage, spill or offset-reset counts. A daemon exports those counters at 0 from the moment it
could count (``watch_*``): ``rate`` and the dashboard need a zero before the first failure.

Health (``/healthz``) is a heartbeat. The loop beats after every micro-batch, and a source that
polls (the daemon's Kafka consumer) beats after every poll, even one that returned nothing:
a daemon idle on an empty topic keeps beating and is healthy, while a loop stuck inside a
learner update, an evaluation or a hung client call stops beating and, after ``stall_seconds``,
is reported stalled. A loop that has finished its stream (a replay that lingers to be scraped)
is healthy. Broker reachability is not liveness: it has its own gauge. A daemon that goes on
learning but cannot make its work durable (checkpoints failing again and again on a full disk)
is ``failing``: :meth:`Telemetry.set_problem` names the trouble until it clears.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.engine.batch import Batch
from stream.engine.evaluation import Evaluation
from stream.engine.event_loop import EventLoop, Observer

# One learner update takes from ~100 µs (nmc on features) to seconds (a ViT step on CPU).
UPDATE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamcl")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` answers: ``state`` is ``progressing``, ``finished``, ``stalled`` or
    ``failing`` (``problems`` says what fails)."""

    state: str
    seconds_since_progress: float
    stall_seconds: float
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state not in ("stalled", "failing")

    def to_json(self) -> dict[str, Any]:
        answer = {
            "status": "ok" if self.ok else self.state,
            "state": self.state,
            "seconds_since_progress": round(self.seconds_since_progress, 3),
            "stall_seconds": self.stall_seconds,
        }
        if self.problems:
            answer["problems"] = dict(self.problems)
        return answer


class Telemetry:
    """The metrics of docs/metrics.md, registered in a private registry, and the loop's heartbeat."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples = Counter("streamcl_samples", "Samples learned.", ["learner"], registry=r)
        self.invalid_messages = Counter(
            "streamcl_invalid_messages", "Messages that failed validation.", ["reason"], registry=r
        )
        self.anytime_accuracy = Gauge(
            "streamcl_anytime_accuracy",
            "Last anytime accuracy a(t) on seen classes.",
            ["learner", "level"],
            registry=r,
        )
        self.auc_accuracy = Gauge(
            "streamcl_auc_accuracy",
            "Running A_auc (mean of anytime accuracies so far).",
            ["learner", "level"],
            registry=r,
        )
        self.prequential_accuracy = Gauge(
            "streamcl_prequential_accuracy",
            "Test-then-train accuracy on the stream.",
            ["learner", "window"],
            registry=r,
        )
        self.drift_events = Counter(
            "streamcl_drift_events",
            "Concept drifts detected on the prequential error stream.",
            ["learner"],
            registry=r,
        )
        self.forgetting = Gauge(
            "streamcl_forgetting",
            "Running forgetting: mean drop from each class's best accuracy.",
            ["learner", "level"],
            registry=r,
        )
        self.seen_classes = Gauge(
            "streamcl_seen_classes", "Classes seen in the stream.", ["level"], registry=r
        )
        self.memory_samples = Gauge(
            "streamcl_memory_samples", "Replay memory occupancy.", ["learner"], registry=r
        )
        # Only while the memory searches approximately (an ivf index); absent otherwise.
        self.memory_index_recall = Gauge(
            "streamcl_memory_index_recall",
            "Recall@10 of the replay memory's ivf index against exact search, at its last training.",
            ["learner"],
            registry=r,
        )
        self.memory_index_nprobe = Gauge(
            "streamcl_memory_index_nprobe",
            "Inverted lists the replay memory's ivf index scans per query.",
            ["learner"],
            registry=r,
        )
        self.update_seconds = Histogram(
            "streamcl_update_seconds",
            "Duration of one learner update (one micro-batch).",
            ["learner"],
            buckets=UPDATE_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamcl_consumer_lag",
            "Messages behind the partition end.",
            ["topic", "partition"],
            registry=r,
        )
        # Only a daemon with a consumer group reports it (stream/daemon/broker_watch.py).
        self.assigned_partitions = Gauge(
            "streamcl_assigned_partitions",
            "Partitions of the topic the consumer group gives this daemon now.",
            ["topic"],
            registry=r,
        )
        # Unlabelled gauges are exported from creation on; these two join the registry when
        # the daemon first reports them (see the module docstring).
        self.last_checkpoint = Gauge(
            "streamcl_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint.",
            registry=None,
        )
        self.broker_up = Gauge(
            "streamcl_broker_up",
            "1 while the Kafka broker answers, 0 while it does not.",
            registry=None,
        )
        self.storage_failures = Counter(
            "streamcl_storage_failures",
            "Failed writes of checkpoints or dead letters (disk full, I/O error, broker away).",
            ["what"],
            registry=r,
        )
        # unlabelled, so registered only by a daemon (watch_dead_letters)
        self.dead_letters_spilled = Counter(
            "streamcl_dead_letters_spilled",
            "Dead letters the dead-letter topic refused for good, written to the spill file.",
            registry=None,
        )
        self.offset_resets = Counter(
            "streamcl_offset_resets",
            "Partitions found behind the checkpoint's position (topic recreated or truncated).",
            ["topic", "partition"],
            registry=r,
        )
        self.build_info = Gauge(
            "streamcl_build_info", "Build information.", ["version"], registry=r
        )
        self.build_info.labels(version=_version()).set(1)
        self._registered: set[Gauge | Counter] = set()
        self._lock = threading.Lock()
        self._clock = clock
        self.last_progress = clock()
        self.finished = False
        self.problems: dict[str, str] = {}

    def observer(self, learner: str) -> TelemetryObserver:
        return TelemetryObserver(self, learner)

    # -- what the daemon reports ----------------------------------------------------------

    def invalid_message(self, reason: str) -> None:
        self.invalid_messages.labels(reason=reason).inc()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def set_assigned_partitions(self, topic: str, count: int) -> None:
        self.assigned_partitions.labels(topic=topic).set(count)

    def restore_invalid_messages(self, counts: dict[str, int]) -> None:
        """Continue the invalid-message counters from a checkpoint's counts."""
        for reason, count in counts.items():
            self.invalid_messages.labels(reason=reason).inc(count)

    def checkpoint_written(self, timestamp: float | None = None) -> None:
        self._register(self.last_checkpoint)
        self.last_checkpoint.set(time.time() if timestamp is None else timestamp)

    def set_broker_up(self, up: bool) -> None:
        self._register(self.broker_up)
        self.broker_up.set(1 if up else 0)

    def watch_storage(self, what: str) -> None:
        """Writes of ``what`` may fail from now on: export their failure count (0 so far)."""
        self.storage_failures.labels(what=what)

    def storage_failed(self, what: str) -> None:
        self.storage_failures.labels(what=what).inc()

    def watch_dead_letters(self) -> None:
        """The daemon writes dead letters: export how many were spilled (0 so far)."""
        self._register(self.dead_letters_spilled)

    def dead_letter_spilled(self) -> None:
        self._register(self.dead_letters_spilled)
        self.dead_letters_spilled.inc()

    def watch_partition(self, topic: str, partition: int) -> None:
        """The daemon reads ``partition`` now: export its offset resets (0 so far)."""
        self.offset_resets.labels(topic=topic, partition=str(partition))

    def offset_reset(self, topic: str, partition: int) -> None:
        self.offset_resets.labels(topic=topic, partition=str(partition)).inc()

    def set_problem(self, name: str, problem: str | None) -> None:
        """Report ``/healthz`` failing because of ``problem`` (None: ``name`` is fine again)."""
        with self._lock:
            if problem is None:
                self.problems.pop(name, None)
            else:
                self.problems[name] = problem

    def _register(self, metric: Gauge | Counter) -> None:
        with self._lock:
            if metric not in self._registered:
                self.registry.register(metric)
                self._registered.add(metric)

    # -- health ---------------------------------------------------------------------------

    def progressed(self) -> None:
        """The loop learned a batch, or its source answered a poll (even with nothing)."""
        self.last_progress = self._clock()
        self.finished = False

    def loop_finished(self) -> None:
        """The stream ended: no more progress is expected, and none is overdue."""
        self.finished = True

    def health(self, stall_seconds: float) -> Health:
        since = max(0.0, self._clock() - self.last_progress)
        with self._lock:
            problems = dict(self.problems)
        if self.finished:
            state = "finished"
        elif since > stall_seconds:
            state = "stalled"
        elif problems:
            state = "failing"
        else:
            state = "progressing"
        return Health(state, since, stall_seconds, problems)


def _set(gauge: Gauge, value: float | None) -> None:
    gauge.set(float("nan") if value is None else value)


class TelemetryObserver(Observer):
    """Updates the metrics of one learner from its event loop."""

    def __init__(self, telemetry: Telemetry, learner: str) -> None:
        self.telemetry = telemetry
        self.learner = learner
        t = telemetry
        self._samples = t.samples.labels(learner=learner)
        self._update = t.update_seconds.labels(learner=learner)
        self._memory = t.memory_samples.labels(learner=learner)
        self._prequential: dict[str, Gauge] = {}
        self._drift_events: Counter | None = None
        self._drift_counted = 0

    def on_batch(
        self, loop: EventLoop, batch: Batch, hits: np.ndarray | None, learn_seconds: float
    ) -> None:
        self._samples.inc(len(batch))
        self._update.observe(learn_seconds)
        self._loop_gauges(loop)
        self.telemetry.progressed()

    def _loop_gauges(self, loop: EventLoop) -> None:
        t = self.telemetry
        self._memory.set(loop.learner.memory_samples)
        calibration = loop.learner.memory_index_calibration
        if calibration is not None:
            t.memory_index_recall.labels(learner=self.learner).set(calibration.recall)
            t.memory_index_nprobe.labels(learner=self.learner).set(calibration.nprobe)
        for window, value in loop.prequential_values().items():
            gauge = self._prequential.get(window)
            if gauge is None:
                gauge = t.prequential_accuracy.labels(learner=self.learner, window=window)
                self._prequential[window] = gauge
            _set(gauge, value)
        if loop.drift is not None:
            # The series exists once detection is on (0 until the first drift), never without.
            if self._drift_events is None:
                self._drift_events = t.drift_events.labels(learner=self.learner)
            self._drift_events.inc(loop.drift_events - self._drift_counted)
            self._drift_counted = loop.drift_events
        for level, name in enumerate(loop.problem.level_names):
            t.seen_classes.labels(level=name).set(int(loop.seen[level].sum()))

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        self._evaluation_gauges(loop, evaluation)
        self.telemetry.progressed()

    def _evaluation_gauges(self, loop: EventLoop, evaluation: Evaluation) -> None:
        t, learner = self.telemetry, self.learner
        # A_auc averages the periodic evaluations only, as results.json does
        # (stream.engine.metrics).
        _set(t.anytime_accuracy.labels(learner=learner, level="all"), evaluation.accuracy)
        _set(t.auc_accuracy.labels(learner=learner, level="all"), loop.anytime_auc())
        for level, name in enumerate(loop.problem.level_names):
            _set(
                t.anytime_accuracy.labels(learner=learner, level=name),
                evaluation.level_accuracy[level],
            )
            _set(t.forgetting.labels(learner=learner, level=name), loop.running_forgetting(level))
            _set(t.auc_accuracy.labels(learner=learner, level=name), loop.anytime_auc(level))

    def restore(self, loop: EventLoop) -> None:
        """Set every series from a loop just restored from a checkpoint (once, before any batch):
        the samples counter continues from the checkpoint's count, and the gauges show what the
        model had reached, not an empty model."""
        self._samples.inc(loop.samples_seen)
        self._loop_gauges(loop)
        if loop.last_evaluation is not None:
            self._evaluation_gauges(loop, loop.last_evaluation)

    def on_finish(self, loop: EventLoop) -> None:
        self.telemetry.loop_finished()
