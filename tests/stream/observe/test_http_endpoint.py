"""stream/observe/http_endpoint.py: /metrics in Prometheus format, /healthz, clean start and stop."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.observe.http_endpoint import (
    EndpointLimits,
    EndpointSecurity,
    MetricsServerError,
    Request,
    Response,
    start_metrics_server,
)
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


# -- hostile clients, TLS and auth --------------------------------------------------------------


def test_500_idle_half_sent_requests_do_not_pin_threads_or_lock_out_a_scraper():
    limits = EndpointLimits(request_timeout=2.0, max_connections=64)
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:
        threads_before = threading.active_count()
        idle = []
        for _ in range(500):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append(conn)
        time.sleep(0.3)
        assert threading.active_count() <= threads_before + limits.handler_threads
        # the oldest idle connections made room; a scraper still gets its answer
        assert _get(f"{server.url}/metrics")[0] == 200
        # and every idle one is closed by the server within the request timeout: the
        # evicted ones at once, the rest with a 408 once their time is up
        deadline = time.monotonic() + 3 * limits.request_timeout
        closed, timed_out = 0, 0
        for conn in idle:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            answer = b""
            try:
                while chunk := conn.recv(4096):
                    answer += chunk
                closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
            timed_out += answer.startswith(b"HTTP/1.1 408 ")
            conn.close()
        assert closed == 500
        assert limits.max_connections - 1 <= timed_out < limits.max_connections


def _exchange(port: int, raw: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_clients_refused_for_oversized_bodies_cannot_lock_out_a_scraper():
    """A 413 is answered, then what the client still sends is read on and dropped for a
    while; those connections took every place, and every newcomer was closed unanswered."""
    limits = EndpointLimits(request_timeout=5.0, max_connections=8)
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:
        refused = []
        for _ in range(limits.max_connections):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
            assert conn.recv(12) == b"HTTP/1.1 413"
            refused.append(conn)
        stop = threading.Event()

        def trickle() -> None:  # a byte now and then: the server keeps discarding
            while not stop.wait(0.2):
                for conn in refused:
                    with contextlib.suppress(OSError):
                        conn.send(b"x")

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            time.sleep(0.3)
            assert _get(f"{server.url}/metrics")[0] == 200
        finally:
            stop.set()
            sender.join()
            for conn in refused:
                conn.close()


def test_a_newcomer_gets_503_while_every_connection_is_being_answered():
    limits = EndpointLimits(max_connections=2, handler_threads=2)
    release = threading.Event()
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:

        def slow(request: Request) -> Response:
            release.wait(10)
            return Response(200, "text/plain", b"done")

        server.add_route("GET", "/slow", slow)
        busy = [
            threading.Thread(target=_exchange, args=(server.port, b"GET /slow HTTP/1.1\r\n\r\n"))
            for _ in range(2)
        ]
        for thread in busy:
            thread.start()
        time.sleep(0.3)
        try:
            answer = _exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        finally:
            release.set()
            for thread in busy:
                thread.join()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer


def test_a_request_that_does_not_arrive_whole_in_time_gets_408():
    limits = EndpointLimits(request_timeout=0.5)
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:
        for raw in [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",  # headers never end
            b"GET /healthz HTTP/1.1\nHost: x\n\n",  # bare line feeds: never a whole head
        ]:
            answer = _exchange(server.port, raw)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"did not arrive whole within 0.5 s" in answer


def test_http_1_1_details_a_client_relies_on():
    with start_metrics_server(Telemetry(), port=0) as server:
        # an absolute-form target, which servers must accept; a malformed one is a 400 (it
        # ended the connection task with a traceback in the log)
        answer = _exchange(server.port, b"GET http://127.0.0.1/healthz HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        for target in (b"http://[", b"http://[x]/"):
            answer = _exchange(server.port, b"GET " + target + b" HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed request target" in answer
        # two different lengths could frame two different requests: refused
        answer = _exchange(
            server.port,
            b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        )
        assert answer.startswith(b"HTTP/1.1 400 ") and b"conflicting Content-Length" in answer
        # a client that asks whether to send its body is told to (curl waits a second else)
        server.add_route("POST", "/echo", lambda request: Response(200, "text/plain", request.body))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(
                b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            assert conn.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
            conn.sendall(b"hello")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nhello")


def test_oversized_and_malformed_requests_get_one_clear_status():
    limits = EndpointLimits(max_header_bytes=1024)
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:
        for raw, status in [
            (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n", b"431"),
            (b"NONSENSE\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.banana\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
            (b"GET /metrics HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", b"400"),
        ]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                conn.sendall(raw)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
                assert answer.split(b" ")[1] == status, raw[:40]
                if status == b"405":  # HTTP requires the methods the path takes
                    assert b"\r\nAllow: GET\r\n" in answer, answer


@pytest.mark.parametrize(
    ("security", "good", "bad"),
    [
        (EndpointSecurity(bearer_token="t0ken"), "Bearer t0ken", "Bearer t0kem"),
        (
            EndpointSecurity(basic_user="prom", basic_password="pw"),
            "Basic " + base64.b64encode(b"prom:pw").decode(),
            "Basic " + base64.b64encode(b"prom:px").decode(),
        ),
    ],
    ids=["bearer", "basic"],
)
def test_auth_guards_every_route_including_added_ones(security, good, bad):
    with start_metrics_server(Telemetry(), port=0, security=security) as server:
        server.add_route("GET", "/extra", lambda request: Response(200, "text/plain", b"x"))
        for path in ("/metrics", "/healthz", "/extra"):
            status, _, _ = _get_with(f"{server.url}{path}", None)
            assert status == 401
            assert _get_with(f"{server.url}{path}", bad)[0] == 401
            assert _get_with(f"{server.url}{path}", good)[0] == 200


def _get_with(url: str, authorization: str | None, context=None) -> tuple[int, str, bytes]:
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers.get("WWW-Authenticate", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate", ""), exc.read()


@pytest.fixture
def tls_files(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, ssl.create_default_context(cafile=str(cert))


def test_tls_serves_https_and_refuses_plain_http(tls_files):
    context, client = tls_files
    security = EndpointSecurity(tls=context, bearer_token="t")
    with start_metrics_server(Telemetry(), port=0, security=security) as server:
        assert server.url.startswith("https://")
        assert _get_with(f"{server.url}/metrics", "Bearer t", client)[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # a TLS port: no answer
            urllib.request.urlopen(server.url.replace("https", "http") + "/metrics", timeout=5)


def test_tls_handshakes_count_against_the_cap_and_evicted_ones_end_at_once(tls_files):
    """asyncio's server ran each TLS handshake before handing the connection over, so stalled
    handshakes (256 KiB of buffer each) were not counted: thousands could be held. And an
    evicted TLS connection waited for the peer's close_notify, keeping its place, so a good
    client got 503 for the request timeout."""
    server_context, client_context = tls_files
    limits = EndpointLimits(request_timeout=10.0, max_connections=8)
    security = EndpointSecurity(tls=server_context)
    with start_metrics_server(Telemetry(), port=0, limits=limits, security=security) as server:
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        # and connections whose handshake ended, then idle (the eviction path of TLS)
        idle = []
        for _ in range(limits.max_connections):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            idle.append(client_context.wrap_socket(raw, server_hostname="127.0.0.1"))
        time.sleep(0.3)
        # the stalled handshakes made way, oldest first: the server closed them
        readable, _, _ = select.select(stalled, [], [], 1.0)
        closed = [conn for conn in readable if conn.recv(1) == b""]
        assert len(closed) >= len(stalled) - limits.max_connections
        started = time.monotonic()
        assert _get_with(f"{server.url}/healthz", None, client_context)[0] == 200
        assert time.monotonic() - started < 2.0
        for conn in stalled + idle:
            conn.close()


def test_answered_tls_clients_that_linger_make_way_for_a_newcomer(tls_files):
    """A close over TLS waits a moment for the peer's close_notify; counted but no longer
    evictable, four answered clients that kept their sockets open locked a good one out for
    that moment (at 130 requests a second, for good)."""
    server_context, client_context = tls_files
    limits = EndpointLimits(max_connections=4)
    security = EndpointSecurity(tls=server_context)
    with start_metrics_server(Telemetry(), port=0, limits=limits, security=security) as server:
        lingering = []
        for _ in range(limits.max_connections):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(b"X\r\n\r\n")
            assert conn.recv(12) == b"HTTP/1.1 400"
            lingering.append(conn)  # and never closed
        assert _get_with(f"{server.url}/healthz", None, client_context)[0] == 200
        for conn in lingering:
            conn.close()


def test_an_unauthenticated_client_learns_nothing_of_a_route_and_sends_no_body():
    """Authentication was checked after the head's other checks: a POST to a route without a
    length got that route's 411, an oversized one its 413 with the route's limit, and
    ``Expect: 100-continue`` its 100, inviting the body before the 401."""
    security = EndpointSecurity(bearer_token="t0ken-long-enough")
    with start_metrics_server(Telemetry(), port=0, security=security) as server:
        server.add_route("POST", "/echo", lambda request: Response(200, "text/plain", b""), 100)
        for raw in [
            b"POST /echo HTTP/1.1\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        ]:
            answer = _exchange(server.port, raw)
            assert answer.startswith(b"HTTP/1.1 401 "), answer
            assert b"WWW-Authenticate: Bearer" in answer and b"999999" not in answer
        # an HTTP/1.0 client's expectation is ignored (RFC 9110), an authenticated 1.1 one's met
        good = b"Authorization: Bearer t0ken-long-enough\r\n"
        answer = _exchange(
            server.port,
            b"POST /echo HTTP/1.0\r\n"
            + good
            + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
        )
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_refused_upload_makes_way_before_a_request_still_arriving():
    """Connections read on after a 413 were put at the back of the eviction queue, so a
    genuine slow request was closed before them."""
    limits = EndpointLimits(request_timeout=5.0, max_connections=3)
    with start_metrics_server(Telemetry(), port=0, limits=limits) as server:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # still arriving
        time.sleep(0.1)
        refused = []
        for _ in range(2):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
            assert conn.recv(12) == b"HTTP/1.1 413"
            conn.sendall(b"x")  # and on sending
            refused.append(conn)
        assert _get(f"{server.url}/metrics")[0] == 200  # one place made
        slow.sendall(b"\r\n")
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")  # the slow request was kept
        for conn in [slow, *refused]:
            conn.close()
