"""stream/observe/http_endpoint.py: /metrics in Prometheus format, /healthz, clean start and stop."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.observe.http_endpoint import MetricsServerError, PostRoute, start_metrics_server
from stream.observe.telemetry import Telemetry
from tests.support import small_stream
from tests.support.clock import Clock


def _get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_in_prometheus_text_format():
    telemetry = Telemetry()
    small_stream.run(1, [telemetry.observer("nmc")])
    with start_metrics_server(telemetry, port=0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        status, content_type, body = _get(f"{server.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("streamcl_samples_total", (("learner", "nmc"),))] == 80
    assert samples[("streamcl_seen_classes", (("level", "label"),))] == 4
    assert any(name == "streamcl_build_info" for name, _ in samples)


def test_openmetrics_when_asked():
    with start_metrics_server(Telemetry(), port=0) as server:
        status, content_type, body = _get(
            f"{server.url}/metrics", accept="application/openmetrics-text"
        )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_healthz_follows_the_heartbeat():
    clock = Clock()
    telemetry = Telemetry(clock=clock)
    with start_metrics_server(telemetry, port=0, stall_seconds=30) as server:
        status, content_type, body = _get(f"{server.url}/healthz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body)["state"] == "progressing"
        clock.now += 31
        status, _, body = _get(f"{server.url}/healthz")
        assert status == 503
        assert json.loads(body) == {
            "status": "stalled",
            "state": "stalled",
            "seconds_since_progress": 31.0,
            "stall_seconds": 30,
        }
        telemetry.progressed()
        assert _get(f"{server.url}/healthz")[0] == 200


def test_unknown_paths_are_404():
    with start_metrics_server(Telemetry(), port=0) as server:
        assert _get(f"{server.url}/")[0] == 404
        assert _get(f"{server.url}/metricsx")[0] == 404


def test_stop_frees_the_port():
    server = start_metrics_server(Telemetry(), port=0)
    port = server.port
    server.stop()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass
    start_metrics_server(Telemetry(), port=port).stop()


def test_a_taken_port_is_one_clear_error():
    with (
        start_metrics_server(Telemetry(), port=0) as server,
        pytest.raises(MetricsServerError) as error,
    ):
        start_metrics_server(Telemetry(), port=server.port)
    assert (
        str(error.value)
        == f"cannot serve metrics on 127.0.0.1:{server.port}: Address already in use"
    )


@pytest.mark.parametrize(
    ("host", "port", "stall", "message"),
    [
        ("127.0.0.1", 70000, 1.0, "metrics port must be in 0..65535, got 70000"),
        ("127.0.0.1", 0, 0.0, "health stall time must be positive, got 0.0"),
        ("no-such-host.invalid", 0, 1.0, "cannot serve metrics on no-such-host.invalid:0"),
    ],
)
def test_bad_address_is_one_clear_error(host, port, stall, message):
    with pytest.raises(MetricsServerError, match=message.replace(".", r"\.")):
        start_metrics_server(Telemetry(), host, port, stall)


def test_a_post_route_that_fails_answers_500_with_the_error():
    def broken(body: bytes) -> tuple[int, bytes]:
        raise RuntimeError("model on fire")

    server = start_metrics_server(
        Telemetry(), port=0, post_routes={"/predict": PostRoute(100, broken)}
    )
    try:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request("POST", "/predict", b"{}")
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
    finally:
        server.stop()
    assert response.status == 500 and answer["error"] == "internal_error"
    assert "model on fire" in answer["detail"]
