"""Prometheus metrics of serving (docs/serving.md): predictions, their latency, label delays.

They join the process's :class:`~stream.observe.telemetry.Telemetry` registry when the daemon
serves predictions, so a daemon without ``[predictions]`` exports none of them. ``source`` tells
predictions answered from the Kafka topic (``kafka``) from ``POST /predict`` (``http``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from stream.observe.telemetry import Telemetry

# One prediction takes ~100 µs (nmc, one sample) to a second (a ViT batch on CPU).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Labels come seconds to days after their predictions.
DELAY_BUCKETS = (
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0,
)  # fmt: skip
SOURCES = ("kafka", "http")


class ServingTelemetry:
    """The serving series, registered in ``telemetry``'s registry."""

    def __init__(self, telemetry: Telemetry) -> None:
        r = telemetry.registry
        self.predictions = Counter(
            "streamcl_predictions", "Predictions served.", ["source"], registry=r
        )
        self.latency = Histogram(
            "streamcl_prediction_latency_seconds",
            "From a request's arrival to its prediction (per message or HTTP batch).",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.label_delay = Histogram(
            "streamcl_label_delay_seconds",
            "From a prediction being served to its label joining it.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.expired = Counter(
            "streamcl_unlabelled_expired",
            "Requests that left the join window without their label.",
            registry=r,
        )
        self.unmatched = Counter(
            "streamcl_labels_unmatched",
            "Labels whose request was not pending (expired, or never served).",
            registry=r,
        )
        self.pending = Gauge(
            "streamcl_pending_requests", "Requests waiting for their labels.", registry=r
        )
        self.http_errors = Counter(
            "streamcl_predict_http_errors",
            "POST /predict requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        for source in SOURCES:  # both series from the start: rate() needs a zero first
            self.predictions.labels(source=source)
            self.latency.labels(source=source)

    def continue_from(self, predictions: int, expired: int, unmatched: int) -> None:
        """Continue the counters a checkpoint keeps (the topic's requests answered, requests
        expired, labels unmatched) after a restart, as ``streamcl_samples_total`` does."""
        self.predictions.labels(source="kafka").inc(predictions)
        self.expired.inc(expired)
        self.unmatched.inc(unmatched)

    def served(self, source: str, count: int, seconds: float) -> None:
        self.predictions.labels(source=source).inc(count)
        self.latency.labels(source=source).observe(seconds)
