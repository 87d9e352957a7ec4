"""``POST /predict``: the daemon's model answers a batch of samples over HTTP while it learns.

The body is JSON, ``{"samples": [{"x": [...], "id": 17}, ...]}`` (``id`` optional, echoed), and
each sample is checked exactly as a prediction request on the topic is
(stream/sources/serving_wire.py), with the same reason codes. The answer::

    {"predictions": [{"id": 17, "predicted": {"label": 3}, "scores": {...}, "position": 1234}],
     "position": 1234, "latency_seconds": 0.0008}

It is a route of the metrics endpoint (stream/observe/http_endpoint.py), behind the same
connection limits, TLS and authentication as ``/metrics``. A bad request is refused whole: 400
(413 for too many samples or bytes, 411 without a ``Content-Length``) with ``{"error": REASON,
"detail": "sample 3: ..."}``; a body over ``max_bytes`` is refused before it is read. A prediction the learner fails on is a 500 with
``{"error": "learner_error", "detail": ...}``, logged and counted, and the daemon serves on.
HTTP predictions change nothing: they are not kept for labels and
not published (requests that want both go through the topic). They are counted in
``streamcl_predictions_total{source="http"}`` and timed in
``streamcl_prediction_latency_seconds{source="http"}``, from the body read to the answer built.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from stream.engine.serving import ServingLoop
from stream.observe.http_endpoint import MetricsServer, Request, Response
from stream.observe.serving_telemetry import ServingTelemetry
from stream.sinks.predictions import prediction_json
from stream.sources.serving_wire import ServingDecoder
from stream.sources.wire import InvalidMessage, short

if TYPE_CHECKING:
    from stream.daemon.serve import Daemon

log = structlog.get_logger("streamcl.predict_http")


class PredictHandler:
    """Answers ``POST /predict`` bodies with the serving loop's current model."""

    def __init__(
        self,
        serving: ServingLoop,
        decoder: ServingDecoder,
        metrics: ServingTelemetry,
        level_names: Sequence[str],
        top_k: int | None,
        max_samples: int,
        max_bytes: int = 4 << 20,
    ) -> None:
        self.serving = serving
        self.decoder = decoder
        self.metrics = metrics
        self.level_names = level_names
        self.top_k = top_k
        self.max_samples = max_samples
        self.max_bytes = max_bytes

    def route(self, request: Request) -> Response:
        """The endpoint's route (stream/observe/http_endpoint.py: limits, TLS and auth apply)."""
        status, body = self(request.body)
        return Response(status, "application/json", body)

    def refusal(self, status: int, detail: str) -> Response:
        """The answer to a request the endpoint refused before reading its body (413 over
        ``max_bytes``, 431 for headers over the endpoint's limit, 411 without a length, 400 for
        a bad one or a malformed request line or header, 405 for a method other than POST, 408
        for a request that did not arrive whole in time), counted like the others."""
        reasons = {
            413: "oversized",
            431: "oversized",
            411: "length_required",
            405: "method_not_allowed",
            408: "request_timeout",
        }
        reason = reasons.get(status, "undecodable")
        self.metrics.http_errors.labels(reason=reason).inc()
        return Response(status, "application/json", _json({"error": reason, "detail": detail}))

    def add_to(self, server: MetricsServer) -> None:
        """Serve this handler as ``POST /predict`` on ``server``, bodies up to ``max_bytes``."""
        server.add_route("POST", "/predict", self.route, self.max_bytes, self.refusal)

    def __call__(self, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        try:
            if len(body) > self.max_bytes:
                raise InvalidMessage(
                    "oversized", f"{len(body)} bytes, the limit is {self.max_bytes}"
                )
            ids, x = self.parse(body)
        except InvalidMessage as exc:
            self.metrics.http_errors.labels(reason=exc.reason).inc()
            status = 413 if exc.reason == "oversized" else 400
            return status, _json({"error": exc.reason, "detail": exc.detail})
        try:
            prediction = self.serving.predict(x)
        except Exception as exc:  # the learner failed on these inputs; the request is refused
            detail = f"{type(exc).__name__}: {exc}"
            log.error("predict_failed", source="http", problem=detail, samples=len(ids))
            self.metrics.http_errors.labels(reason="learner_error").inc()
            return 500, _json({"error": "learner_error", "detail": short(detail)})
        answers = [
            prediction_json(
                ids[i],
                prediction.predicted[i].tolist(),
                [scores[i] for scores in prediction.scores],
                self.level_names,
                prediction.position,
                self.top_k,
            )
            for i in range(len(ids))
        ]
        latency = time.perf_counter() - started
        self.metrics.served("http", len(ids), latency)
        reply = {"predictions": answers, "position": prediction.position}
        return 200, _json({**reply, "latency_seconds": latency})

    def parse(self, body: bytes) -> tuple[list[int], np.ndarray]:
        """The ids (-1: none) and inputs of a body, or :class:`InvalidMessage` saying why not."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidMessage("undecodable", f"not JSON ({type(exc).__name__})") from None
        if not isinstance(message, dict) or "samples" not in message:
            raise InvalidMessage("missing_field", 'the body must be {"samples": [...]}')
        samples = message["samples"]
        if not isinstance(samples, list) or not samples:
            raise InvalidMessage("wrong_type", "'samples' must be a non-empty list")
        if len(samples) > self.max_samples:
            raise InvalidMessage(
                "oversized", f"{len(samples)} samples, the limit is {self.max_samples}"
            )
        ids, inputs = [], []
        for i, sample in enumerate(samples):
            try:
                if not isinstance(sample, dict):
                    raise InvalidMessage("wrong_type", "a sample must be a JSON object")
                for name in ("y", "level"):
                    if name in sample:
                        raise InvalidMessage("wrong_type", f"/predict takes no {name!r}")
                if "x" not in sample:
                    raise InvalidMessage("missing_field", "field 'x' is missing")
                request = self.decoder._json_request(sample)
            except InvalidMessage as exc:
                raise InvalidMessage(exc.reason, f"sample {i}: {exc.detail}") from None
            ids.append(int(request.ids[0]))
            inputs.append(request.x[0])
        return ids, np.stack(inputs)


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def predict_handler(daemon: Daemon) -> PredictHandler | None:
    """The handler of ``POST /predict`` for ``daemon``; None when it does not serve over HTTP."""
    service = daemon.predictions
    config = daemon.config.predictions
    if service is None or config is None or not config.http:
        return None
    assert isinstance(daemon.decoder, ServingDecoder)  # a serving daemon decodes requests
    return PredictHandler(
        service.serving,
        daemon.decoder,
        service.metrics,
        daemon.problem.level_names,
        config.top_k,
        config.http_max_samples,
        config.http_max_bytes,
    )


def add_predict_route(server: MetricsServer, daemon: Daemon) -> None:
    """``POST /predict`` on ``server`` when ``daemon`` serves over HTTP."""
    handler = predict_handler(daemon)
    if handler is not None:
        handler.add_to(server)
