"""``POST /predict`` (stream/daemon/predict_http.py) on the metrics endpoint, in process."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
import torch

from learners.registry import create
from stream.daemon.predict_http import PredictHandler
from stream.data.datasets import as_float_tensor, load_dataset
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop
from stream.engine.serving import ServingLoop
from stream.observe.http_endpoint import start_metrics_server
from stream.observe.serving_telemetry import ServingTelemetry
from stream.observe.telemetry import Telemetry
from stream.sources.serving_wire import ServingDecoder
from stream.sources.wire import Decoder


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset("digits")
    return as_float_tensor(dataset.X_train).numpy(), dataset.y_train, dataset.problem()


@pytest.fixture
def endpoint(digits):
    x, y, problem = digits
    serving = ServingLoop(EventLoop(create("nmc", problem), problem))
    serving.learn(
        Batch(
            x=torch.from_numpy(x[:500]),
            y=torch.from_numpy(y[:500].astype(np.int64)),
            level=torch.zeros(500, dtype=torch.long),
        )
    )
    telemetry = Telemetry()
    metrics = ServingTelemetry(telemetry)
    decoder = ServingDecoder(Decoder(problem, max_bytes=1 << 20))
    handler = PredictHandler(
        serving, decoder, metrics, problem.level_names, 2, max_samples=64, max_bytes=64_000
    )
    server = start_metrics_server(telemetry, port=0)
    server.add_route("POST", "/predict", handler.route)
    yield server, serving, telemetry
    server.stop()


def _post(server, body: bytes, path: str = "/predict", length: bool = True):
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        if length:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        text = response.read()
        if response.getheader("Content-Type") != "application/json":
            return response.status, text
        return response.status, json.loads(text)
    finally:
        connection.close()


def _body(samples) -> bytes:
    return json.dumps({"samples": samples}).encode()


def test_a_batch_of_64_digits_is_predicted_with_the_current_model(endpoint, digits):
    server, serving, telemetry = endpoint
    x, y, _ = digits
    rows = range(1000, 1064)
    samples = [{"id": i, "x": x[i].tolist()} for i in rows]
    status, answer = _post(server, _body(samples))
    assert status == 200 and answer["position"] == 500
    expected = serving.predict(x[1000:1064]).predicted[:, 0]
    got = [p["predicted"]["label"] for p in answer["predictions"]]
    assert got == expected.tolist() and [p["id"] for p in answer["predictions"]] == list(rows)
    assert np.mean(np.array(got) == y[1000:1064]) > 0.8
    top = answer["predictions"][0]["top_k"]["label"]
    assert len(top) == 2 and top[0][0] == got[0] and top[0][1] >= top[1][1]
    served = telemetry.registry.get_sample_value("streamcl_predictions_total", {"source": "http"})
    assert served == 64


@pytest.mark.parametrize(
    ("body", "status", "reason", "detail"),
    [
        (b"{not json", 400, "undecodable", "not JSON"),
        (b"[1, 2]", 400, "missing_field", '{"samples"'),
        (_body([]), 400, "wrong_type", "non-empty list"),
        (_body([{"x": [0.0] * 63}]), 400, "wrong_dimension", "sample 0: 'x' has shape (63,)"),
        (_body([{"x": [0.0] * 64}, {"x": [0.0] * 64, "y": 1}]), 400, "wrong_type", "sample 1"),
        (_body([{"x": [0.0] * 63 + [float("nan")]}]), 400, "non_finite", "sample 0"),
        (_body([{"id": "a", "x": [0.0] * 64}]), 400, "wrong_type", "'id' must be an integer"),
        (_body([{"x": [0.0] * 64}] * 65), 413, "oversized", "65 samples, the limit is 64"),
        (b"x" * 64_001, 413, "oversized", "64001 bytes, the limit is 64000"),
    ],
)
def test_bad_requests_get_4xx_with_the_reason(endpoint, body, status, reason, detail):
    server, _, telemetry = endpoint
    got, answer = _post(server, body)
    assert (got, answer["error"]) == (status, reason) and detail in answer["detail"]
    if status == 400:
        counted = telemetry.registry.get_sample_value(
            "streamcl_predict_http_errors_total", {"reason": reason}
        )
        assert counted == 1


def test_a_body_without_a_length_or_another_path_is_refused(endpoint):
    server, _, _ = endpoint
    status, answer = _post(server, b"", length=False)  # read as an empty body
    assert (status, answer["error"]) == (400, "undecodable")
    assert _post(server, _body([]), path="/learn")[0] == 404
