"""The HTTP endpoint of a streamcl process: ``/metrics`` for Prometheus and ``/healthz``.

A small threaded server on a daemon thread, so any process (a replay, the daemon, a notebook)
exposes its :class:`~stream.observe.telemetry.Telemetry` with one call and stops it with another::

    server = start_metrics_server(telemetry, "127.0.0.1", 9100)
    ...
    server.stop()

``/metrics`` is the Prometheus text format (OpenMetrics when the scraper asks for it).
``/healthz`` answers 200 while the loop makes progress (or has finished its stream) and 503 once
it has not progressed for ``stall_seconds``, with the details as JSON; see ``stream.observe.telemetry``
for what counts as progress. ``stall_seconds`` must exceed the longest single learner update or
evaluation the process does, or a slow but working loop is reported stalled.

A process may add ``POST`` routes (the daemon's ``/predict``, stream/daemon/predict_http.py):
a body needs a ``Content-Length`` (411 without) within the route's limit (413 above it, unread).

The default address is loopback: the metrics describe what a model learned, so exposing them
to other hosts (a Prometheus in another container) is a deliberate choice of ``host``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client.exposition import choose_encoder

from stream.observe.telemetry import Telemetry

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STALL_SECONDS = 120.0

log = structlog.get_logger("streamcl.metrics_server")


class MetricsServerError(ValueError):
    """The metrics endpoint cannot start as asked (bad host or port, port taken, bad stall time)."""


@dataclass(frozen=True)
class PostRoute:
    """A ``POST`` path (``/predict``): bodies above ``max_bytes`` are refused unread (413);
    ``handle`` takes the body and answers ``(status, JSON body)``."""

    max_bytes: int
    handle: Callable[[bytes], tuple[int, bytes]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        family: int,
        telemetry: Telemetry,
        stall_seconds: float,
        post_routes: dict[str, PostRoute],
    ) -> None:
        self.address_family = family
        self.telemetry = telemetry
        self.stall_seconds = stall_seconds
        self.post_routes = post_routes
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that gave up (its timeout passed while the loop held the GIL) is routine;
        # anything else is a bug worth a traceback, as one log line rather than raw stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client_disconnected", client=client_address[0])
        else:
            log.exception("request_failed", client=client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, content_type, encoder(self.server.telemetry.registry))
        elif path == "/healthz":
            health = self.server.telemetry.health(self.server.stall_seconds)
            body = json.dumps(health.to_json()).encode() + b"\n"
            self._reply(200 if health.ok else 503, "application/json", body)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def do_POST(self) -> None:
        route = self.server.post_routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._refuse(404, "not_found", f"no POST route {self.path.split('?', 1)[0]!r}")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._refuse(411, "length_required", "send the body with a Content-Length")
            return
        if int(length) > route.max_bytes:
            self.close_connection = True  # the body is left unread
            self._refuse(413, "oversized", f"{length} bytes, the limit is {route.max_bytes}")
            return
        body = self.rfile.read(int(length))
        try:
            status, answer = route.handle(body)
        except Exception as exc:  # a failing model must not drop the connection silently
            log.exception("post_failed", path=self.path)
            self._refuse(500, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        self._reply(status, "application/json", answer)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        body = json.dumps({"error": reason, "detail": detail}).encode() + b"\n"
        self._reply(status, "application/json", body)

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape would drown the loop's own logs; keep it for debugging.
        log.debug("http_request", client=self.client_address[0], request=format % args)


class MetricsServer:
    """A running metrics endpoint; ``stop()`` closes it and frees the port."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        address = httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_metrics_server(
    telemetry: Telemetry,
    host: str = DEFAULT_HOST,
    port: int = 9100,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    post_routes: dict[str, PostRoute] | None = None,
) -> MetricsServer:
    """Serve ``telemetry`` on ``host:port`` (port 0: any free port; see ``.port``), and any
    ``post_routes`` (the daemon's ``POST /predict``) next to it."""
    if not 0 <= port <= 65535:
        raise MetricsServerError(f"metrics port must be in 0..65535, got {port}")
    if stall_seconds <= 0:
        raise MetricsServerError(f"health stall time must be positive, got {stall_seconds}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        httpd = _Server((host, port), family, telemetry, stall_seconds, post_routes or {})
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {reason}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="streamcl-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("metrics_server_started", url=server.url, stall_seconds=stall_seconds)
    return server
