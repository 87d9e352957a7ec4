"""``POST /predict`` (stream/daemon/predict_http.py) on the metrics endpoint, in process."""

from __future__ import annotations

import http.client
import json
import socket

import numpy as np
import pytest
import torch

from learners.registry import create
from stream.daemon.predict_http import PredictHandler
from stream.data.datasets import as_float_tensor, load_dataset
from stream.engine.batch import Batch
from stream.engine.event_loop import EventLoop
from stream.engine.serving import ServingLoop
from stream.observe.http_endpoint import EndpointLimits, start_metrics_server
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
    handler.add_to(server)
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
        (
            b'{"samples": [{"x": ' + b"[" * 40 + b"0.5" + b"]" * 40 + b"}]}",
            400,
            "wrong_dimension",
            "sample 0",
        ),
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
    counted = telemetry.registry.get_sample_value(
        "streamcl_predict_http_errors_total", {"reason": reason}
    )
    assert counted == 1


def _raw(server, head: bytes) -> tuple[int, dict]:
    """Send ``head`` (a request line and headers, then whatever follows) as it is."""
    with socket.create_connection((server.host, server.port), timeout=10) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (b"POST /predict HTTP/1.1\r\n\r\n", 411, "length_required"),
        (
            b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            411,
            "length_required",
        ),
        (b"POST /predict HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 400, "undecodable"),
        (b"POST /predict HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n0123456789", 400, "undecodable"),
        (b"POST /predict HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413, "oversized"),
        # refused before the endpoint knew the route, these were plain text and not counted
        (b"POST /predict HTTP/1.1\r\nX: " + b"a" * (20 << 10) + b"\r\n\r\n", 431, "oversized"),
        (b"POST /predict HTTP/1.1\r\nno colon here\r\n\r\n", 400, "undecodable"),
        (b"POST /predict HTTP/2.0\r\nContent-Length: 0\r\n\r\n", 400, "undecodable"),
        (b"POST  /predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, "undecodable"),
    ],
    ids=[
        "no-length", "chunked", "plus", "underscore", "oversized",
        "headers-too-large", "header-line", "http2", "request-line",
    ],
)  # fmt: skip
def test_a_request_refused_before_its_body_is_read_gets_json_and_is_counted(
    endpoint, head, status, reason
):
    server, _, telemetry = endpoint
    got, answer = _raw(server, head)
    assert (got, answer["error"]) == (status, reason)
    counted = telemetry.registry.get_sample_value(
        "streamcl_predict_http_errors_total", {"reason": reason}
    )
    assert counted == 1


def test_a_request_that_stalls_gets_a_json_408_counted(digits):
    problem = digits[2]
    serving = ServingLoop(EventLoop(create("nmc", problem), problem))
    telemetry = Telemetry()
    decoder = ServingDecoder(Decoder(problem, max_bytes=1 << 20))
    handler = PredictHandler(
        serving, decoder, ServingTelemetry(telemetry), problem.level_names, None, 64
    )
    limits = EndpointLimits(request_timeout=0.5)
    with start_metrics_server(telemetry, port=0, limits=limits) as server:
        handler.add_to(server)
        # a body of 395 bytes where 10000 were announced, then nothing
        status, answer = _raw(
            server, b"POST /predict HTTP/1.1\r\nContent-Length: 10000\r\n\r\n" + b"{" * 395
        )
    assert (status, answer["error"]) == (408, "request_timeout")
    assert "within 0.5 s" in answer["detail"]
    counted = telemetry.registry.get_sample_value(
        "streamcl_predict_http_errors_total", {"reason": "request_timeout"}
    )
    assert counted == 1


@pytest.mark.parametrize("method", [b"GET", b"PUT", b"DELETE"])
def test_another_method_is_refused_as_json_saying_which_is_allowed(endpoint, method):
    server, _, telemetry = endpoint
    with socket.create_connection((server.host, server.port), timeout=10) as connection:
        connection.sendall(method + b" /predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.split(b" ", 2)[1] == b"405"
    assert b"\r\nAllow: POST" in head and b"Content-Type: application/json" in head
    refused = json.loads(body)
    assert refused["error"] == "method_not_allowed" and "use POST" in refused["detail"]
    counted = telemetry.registry.get_sample_value(
        "streamcl_predict_http_errors_total", {"reason": "method_not_allowed"}
    )
    assert counted == 1


def test_another_path_is_refused(endpoint):
    server, _, _ = endpoint
    assert _post(server, _body([]), path="/learn")[0] == 404


def test_bodies_up_to_the_handlers_limit_pass_even_beyond_the_endpoints(digits):
    """The endpoint's own body limit (1 MiB) does not cap ``http_max_bytes`` (4 MiB default)."""
    x, y, problem = digits
    serving = ServingLoop(EventLoop(create("nmc", problem), problem))
    serving.learn(Batch(x=torch.from_numpy(x[:200]), y=torch.from_numpy(y[:200].astype(np.int64)),
                        level=torch.zeros(200, dtype=torch.long)))  # fmt: skip
    telemetry = Telemetry()
    decoder = ServingDecoder(Decoder(problem, max_bytes=1 << 20))
    handler = PredictHandler(
        serving, decoder, ServingTelemetry(telemetry), problem.level_names, None, 1024, 4 << 20
    )
    with start_metrics_server(telemetry, port=0) as server:
        handler.add_to(server)
        # full-precision floats: 1024 samples of 64 make about 1.3 MB
        noisy = x[:1024].reshape(1024, -1) + np.random.default_rng(0).normal(size=(1024, 64))
        body = _body([{"id": i, "x": row} for i, row in enumerate(noisy.tolist())])
        assert server.limits.max_body_bytes < len(body) < 4 << 20
        status, answer = _post(server, body)
        assert status == 200 and len(answer["predictions"]) == 1024


def test_a_client_sending_a_body_over_the_limit_reads_the_refusal(endpoint):
    """The endpoint answered 413 before reading the body and closed: a client still sending
    5 MB saw its connection reset, not the answer."""
    server, _, telemetry = endpoint
    status, answer = _post(server, b"x" * (5 << 20))
    assert (status, answer["error"]) == (413, "oversized")
    assert "the limit is 64000" in answer["detail"]
    counted = telemetry.registry.get_sample_value(
        "streamcl_predict_http_errors_total", {"reason": "oversized"}
    )
    assert counted == 1
