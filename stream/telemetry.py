"""Prometheus metrics of a streamcl process (SPEC §7), fed by the event loop and the daemon.

Every metric lives in the ``Telemetry`` object's own registry, so several loops (or tests) in
one process do not collide. ``TelemetryObserver`` turns the loop's batches and evaluations into
metric updates; the daemon reports consumer lag, invalid messages, broker state and checkpoints
through the methods here.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.batch import Batch
from stream.evaluation import Evaluation
from stream.event_loop import EventLoop, Observer

# One learner update takes from ~100 µs (nmc on features) to seconds (a ViT step on CPU).
UPDATE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamcl")
    except PackageNotFoundError:
        return "0+unknown"


class Telemetry:
    """The SPEC §7 metrics, registered in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples = Counter("streamcl_samples", "Samples learned.", ["learner"], registry=r)
        self.invalid_messages = Counter(
            "streamcl_invalid_messages", "Messages that failed validation.", ["reason"], registry=r
        )
        self.anytime_accuracy = Gauge(
            "streamcl_anytime_accuracy", "Last anytime accuracy a(t) on seen classes.",
            ["learner", "level"], registry=r,
        )
        self.auc_accuracy = Gauge(
            "streamcl_auc_accuracy", "Running A_auc (mean of anytime accuracies so far).",
            ["learner", "level"], registry=r,
        )
        self.prequential_accuracy = Gauge(
            "streamcl_prequential_accuracy", "Test-then-train accuracy on the stream.",
            ["learner", "window"], registry=r,
        )
        self.forgetting = Gauge(
            "streamcl_forgetting", "Running forgetting: mean drop from each class's best accuracy.",
            ["learner", "level"], registry=r,
        )
        self.seen_classes = Gauge("streamcl_seen_classes", "Classes seen in the stream.", ["level"], registry=r)
        self.memory_samples = Gauge(
            "streamcl_memory_samples", "Replay memory occupancy.", ["learner"], registry=r
        )
        self.update_seconds = Histogram(
            "streamcl_update_seconds", "Duration of one learner update (one micro-batch).",
            ["learner"], buckets=UPDATE_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "streamcl_consumer_lag", "Messages behind the partition end.", ["topic", "partition"], registry=r
        )
        self.last_checkpoint = Gauge(
            "streamcl_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint.", registry=r
        )
        self.broker_up = Gauge(
            "streamcl_broker_up", "1 while the Kafka broker answers, 0 while it does not.", registry=r
        )
        self.build_info = Gauge("streamcl_build_info", "Build information.", ["version"], registry=r)
        self.build_info.labels(version=_version()).set(1)
        self.last_progress = time.monotonic()

    def observer(self, learner: str) -> TelemetryObserver:
        return TelemetryObserver(self, learner)

    def invalid_message(self, reason: str) -> None:
        self.invalid_messages.labels(reason=reason).inc()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def checkpoint_written(self, timestamp: float | None = None) -> None:
        self.last_checkpoint.set(time.time() if timestamp is None else timestamp)

    def set_broker_up(self, up: bool) -> None:
        self.broker_up.set(1 if up else 0)

    def progressed(self) -> None:
        """The loop made progress (for the health check)."""
        self.last_progress = time.monotonic()


def _set(gauge: Gauge, value: float | None, **labels: str) -> None:
    gauge.labels(**labels).set(float("nan") if value is None else value)


class TelemetryObserver(Observer):
    """Updates the metrics of one learner from its event loop."""

    def __init__(self, telemetry: Telemetry, learner: str) -> None:
        self.telemetry = telemetry
        self.learner = learner
        t = telemetry
        self._samples = t.samples.labels(learner=learner)
        self._update = t.update_seconds.labels(learner=learner)
        self._memory = t.memory_samples.labels(learner=learner)

    def on_batch(self, loop: EventLoop, batch: Batch, hits: np.ndarray, learn_seconds: float) -> None:
        t = self.telemetry
        self._samples.inc(len(batch))
        self._update.observe(learn_seconds)
        self._memory.set(loop.learner.memory_samples)
        _set(t.prequential_accuracy, loop.prequential.cumulative, learner=self.learner, window="cumulative")
        _set(
            t.prequential_accuracy, loop.prequential.rolling,
            learner=self.learner, window=str(loop.prequential.window),
        )
        for level, name in enumerate(loop.problem.level_names):
            t.seen_classes.labels(level=name).set(int(loop.seen[level].sum()))
        t.progressed()

    def on_evaluation(self, loop: EventLoop, evaluation: Evaluation, kind: str) -> None:
        t = self.telemetry
        summary = loop.summary()
        _set(t.anytime_accuracy, evaluation.accuracy, learner=self.learner, level="all")
        _set(t.auc_accuracy, summary["A_auc"], learner=self.learner, level="all")
        for level, name in enumerate(loop.problem.level_names):
            _set(t.anytime_accuracy, evaluation.level_accuracy[level], learner=self.learner, level=name)
            _set(t.forgetting, loop.running_forgetting(level), learner=self.learner, level=name)
            if "per_level" in summary:
                _set(t.auc_accuracy, summary["per_level"][name]["A_auc"], learner=self.learner, level=name)
            else:
                _set(t.auc_accuracy, summary["A_auc"], learner=self.learner, level=name)
