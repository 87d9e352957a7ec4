"""The HTTP endpoint of a streamcl process: ``/metrics`` for Prometheus and ``/healthz``.

A small server on a daemon thread, so any process (a replay, the daemon, a notebook) exposes
its :class:`~stream.observe.telemetry.Telemetry` with one call and stops it with another::

    server = start_metrics_server(telemetry, "127.0.0.1", 9100)
    ...
    server.stop()

``/metrics`` is the Prometheus text format (OpenMetrics when the scraper asks for it).
``/healthz`` answers 200 while the loop makes progress (or has finished its stream) and 503 once
it has not progressed for ``stall_seconds``, with the details as JSON; see
``stream.observe.telemetry`` for what counts as progress. ``stall_seconds`` must exceed the
longest single learner update or evaluation the process does, or a slow but working loop is
reported stalled.

Every byte a client sends is hostile until proven otherwise. Connections are accepted and read
by one asyncio event loop, not a thread each, so idle or half-sent requests cost a few KiB, not
a thread. A connection counts from its accept (its TLS handshake included): at most
``max_connections`` are open, and a new one beyond that ends the oldest that has not finished
sending its request, or is still sending a body it was refused for (so a flood of idle
connections, stalled handshakes or trickled refused uploads cannot lock a scraper out); while
every open one is being answered, a newcomer gets 503. A request must arrive whole (request
line and headers within ``max_header_bytes``, a body within ``max_body_bytes``) within
``request_timeout`` seconds, else it gets 408. Credentials are checked as soon as the headers are
read, before anything route-specific is said (a 411, a 413 with the route's limit, a ``100
Continue``) or any body is read. Only a complete request reaches a handler, which runs on a
small thread pool. A close waits a second at most for the peer (a TLS close_notify).

Optional TLS (``EndpointSecurity.tls``) and authentication (a bearer token or a basic-auth
pair, compared in constant time) apply to every route, those added later with
:meth:`MetricsServer.add_route` included. The default address is loopback: the metrics
describe what a model learned, so exposing them to other hosts (a Prometheus in another
container) is a deliberate choice of ``host``; docs/daemon.md shows TLS, auth and the
reverse-proxy setup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import json
import math
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import choose_encoder

from stream.observe.telemetry import Telemetry

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STALL_SECONDS = 120.0

log = structlog.get_logger("streamcl.metrics_server")

# HTTP/1.x versions served; anything else is refused (400).
_VERSIONS = ("HTTP/1.0", "HTTP/1.1")

# What a refused client may still send before its connection closes (see _discard).
DISCARD_BYTES = 64 << 20
DISCARD_IDLE_SECONDS = 1.0
LISTEN_BACKLOG = 128

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class MetricsServerError(ValueError):
    """The metrics endpoint cannot start as asked (bad host or port, port taken, bad limits)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: str


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[Request], Response]
# a route's own answer to a request refused before it reached the route: (status, detail)
Refusal = Callable[[int, str], Response]


@dataclass(frozen=True)
class EndpointLimits:
    """What one connection may cost."""

    request_timeout: float = 10.0
    max_connections: int = 128
    max_header_bytes: int = 16 << 10
    max_body_bytes: int = 1 << 20
    handler_threads: int = 4

    def check(self) -> None:
        if self.request_timeout <= 0 or self.max_connections < 1 or self.handler_threads < 1:
            raise MetricsServerError(
                "request timeout, connection cap and handler threads must be positive, got "
                f"{self.request_timeout}, {self.max_connections}, {self.handler_threads}"
            )


@dataclass(frozen=True)
class EndpointSecurity:
    """TLS and who may ask: a bearer token, or a basic-auth user and password (or neither)."""

    tls: ssl.SSLContext | None = None
    bearer_token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.bearer_token is not None and self.basic_user is not None:
            raise MetricsServerError("give a bearer token or basic auth, not both")
        if (self.basic_user is None) != (self.basic_password is None):
            raise MetricsServerError("basic auth needs both a user and a password")

    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` value when auth is on, else None."""
        if self.bearer_token is not None:
            return 'Bearer realm="streamcl"'
        if self.basic_user is not None:
            return 'Basic realm="streamcl", charset="UTF-8"'
        return None

    def allows(self, authorization: str | None) -> bool:
        if self.challenge() is None:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        if self.bearer_token is not None:
            return scheme.lower() == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self.bearer_token.encode()
            )
        assert self.basic_user is not None and self.basic_password is not None
        expected = base64.b64encode(f"{self.basic_user}:{self.basic_password}".encode())
        return scheme.lower() == "basic" and hmac.compare_digest(
            credentials.strip().encode(), expected
        )


class _BadRequest(Exception):
    def __init__(
        self, status: int, detail: str, head: tuple[str, str, dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.head = head  # method, path and headers, when the request got that far


class MetricsServer:
    """A running endpoint; ``add_route`` serves more paths, ``stop()`` frees the port."""

    def __init__(
        self,
        telemetry: Telemetry,
        stall_seconds: float,
        limits: EndpointLimits,
        security: EndpointSecurity,
    ) -> None:
        self.telemetry = telemetry
        self.stall_seconds = stall_seconds
        self.limits = limits
        self.security = security
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/metrics"): self._metrics,
            ("GET", "/healthz"): self._healthz,
        }
        # per route: its own body limit and its own answer to a request refused before it
        self._body_limits: dict[tuple[str, str], int] = {}
        self._refusals: dict[tuple[str, str], Refusal] = {}
        # connections still sending their request (or a body refused), oldest first: the
        # first to go when connections run out
        self._pending: OrderedDict[int, asyncio.Task[None]] = OrderedDict()
        self._turned_away = 0
        self._open = 0
        # every connection's task (and those turned away), cancelled when the server stops
        self._tasks: set[asyncio.Task[Any]] = set()
        self._executor = ThreadPoolExecutor(limits.handler_threads, "streamcl-http")
        self._loop = asyncio.new_event_loop()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.host, self.port = "", 0

    # -- routes ---------------------------------------------------------------------------

    def add_route(
        self,
        method: str,
        path: str,
        route: Route,
        max_body_bytes: int | None = None,
        refuse: Refusal | None = None,
    ) -> None:
        """Serve ``route`` for ``method path`` (behind the same limits, TLS and auth).

        ``max_body_bytes``: the route's body limit instead of the endpoint's; a body over it is
        refused (413) before it is read. ``refuse``: the route's answer to a request for it that
        the endpoint refuses before the route sees it (413, 411, a bad ``Content-Length``), for
        clients that authenticated (others get the endpoint's plain answer)."""
        key = (method.upper(), path)
        self.routes[key] = route
        if max_body_bytes is not None:
            self._body_limits[key] = max_body_bytes
        if refuse is not None:
            self._refusals[key] = refuse

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, content_type, encoder(self.telemetry.registry))

    def _healthz(self, request: Request) -> Response:
        health = self.telemetry.health(self.stall_seconds)
        body = json.dumps(health.to_json()).encode() + b"\n"
        return Response(200 if health.ok else 503, "application/json", body)

    # -- start and stop -------------------------------------------------------------------

    def start(self, host: str, port: int) -> None:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((host, port))
            except OSError:
                listener.close()
                raise
        except OSError as exc:
            self._loop.close()
            self._executor.shutdown()
            reason = exc.strerror or str(exc)
            raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {reason}") from None
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = self._loop.create_task(self._accept(listener))
        address = listener.getsockname()
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="streamcl-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.security.tls else 'http'}://{host}:{self.port}"

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop.close()
        self._executor.shutdown(wait=True)

    async def _shutdown(self) -> None:
        assert self._accepting is not None and self._listener is not None
        self._accepting.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._accepting, *self._tasks, return_exceptions=True)
        self._listener.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection -------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        """Accept connections and hand each to its own task. asyncio's own server runs the TLS
        handshake before handing a connection over, so connections in their handshake (each
        with a 256 KiB buffer) were not counted: here every connection counts from its accept."""
        while True:
            try:
                connection, _ = await self._loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors: the backlog waits a moment
                log.warning("accept_failed", problem=exc.strerror or str(exc))
                await asyncio.sleep(DISCARD_IDLE_SECONDS)
                continue
            task = self._loop.create_task(self._connection(connection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # a task cancelled before it ran (the server stopping) never reached its finally
            task.add_done_callback(functools.partial(_close_socket, connection))

    async def _connection(self, connection: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        key = id(task)
        if self._open >= self.limits.max_connections:
            if not self._pending:  # every connection is being answered: refuse this one
                await self._turn_away(connection)
                return
            _, oldest = self._pending.popitem(last=False)
            oldest.cancel()  # its handshake, read or discard ends, and it closes
            log.debug("connection_evicted", open=self._open)
        self._open += 1
        self._pending[key] = task
        try:
            client = str(connection.getpeername()[0])
        except OSError:
            client = "?"
        head: list[tuple[str, str, dict[str, str]]] = []  # the request's head, once read
        writer: asyncio.StreamWriter | None = None
        cancelled = False
        try:
            try:
                async with asyncio.timeout(self.limits.request_timeout):
                    reader, writer = await self._streams(connection, self.security.tls)
                    request = await self._read(reader, writer, client, head)
            except TimeoutError:
                self._pending.pop(key, None)
                if writer is None:
                    return  # the TLS handshake did not end: nothing can be said
                late = f"the request did not arrive whole within {self.limits.request_timeout:g} s"
                await self._send(writer, self._refusal(_BadRequest(408, late, *head[:1])))
                return
            except _BadRequest as exc:
                self._pending.pop(key, None)
                assert writer is not None
                await self._send(writer, self._refusal(exc))
                if exc.status in (401, 413):
                    # A client still sending the body it was refused for would see the
                    # connection reset, not the answer: read on for a while, then close.
                    # It has its answer, so it is the first to close when connections run
                    # out: refused uploads cannot take every place.
                    self._first_to_go(key, task)
                    await self._discard(reader)
                return
            self._pending.pop(key, None)
            response = await self._loop.run_in_executor(self._executor, self._answer, request)
            await self._send(writer, response)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            log.debug("connection_dropped", client=client)
        except asyncio.CancelledError:
            cancelled = True  # evicted, or the server stops
        finally:
            self._pending.pop(key, None)
            if writer is None:
                connection.close()
            elif cancelled:  # its place is taken already: no wait for the peer
                writer.transport.abort()
            else:
                # answered: while it waits for the peer's close it is the first to make way
                self._first_to_go(key, task)
                await self._close(writer)
                self._pending.pop(key, None)
            self._open -= 1

    def _first_to_go(self, key: int, task: asyncio.Task[None]) -> None:
        """Put a connection that has its answer at the head of the eviction queue."""
        self._pending[key] = task
        self._pending.move_to_end(key, last=False)

    async def _streams(
        self, connection: socket.socket, tls: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A reader and writer over an accepted connection, after the TLS handshake where TLS
        is on."""
        reader = asyncio.StreamReader(limit=self.limits.max_header_bytes)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await self._loop.connect_accepted_socket(
            lambda: protocol,
            connection,
            ssl=tls,
            ssl_handshake_timeout=self.limits.request_timeout if tls else None,
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, self._loop)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close, waiting a moment at most for the peer (a TLS close waits for its
        close_notify, 30 s by default, while the connection holds its buffers)."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), DISCARD_IDLE_SECONDS)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
            writer.transport.abort()

    async def _turn_away(self, connection: socket.socket) -> None:
        """503 to a connection beyond the cap while every open one is being answered. Its
        request is read (for a second at most) before closing, else the close would reset the
        connection and the client might never see the 503; beyond ``max_connections`` such
        connections at once, they are closed as they come. Over TLS, where nothing can be said
        before a handshake, the connection is closed at once."""
        if self.security.tls is not None or self._turned_away >= self.limits.max_connections:
            connection.close()
            return
        self._turned_away += 1
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self._streams(connection, None)
            writer.write(_encode(_BUSY))
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(DISCARD_IDLE_SECONDS):
                await reader.read(self.limits.max_header_bytes)
        except (TimeoutError, ConnectionError, OSError, asyncio.CancelledError):
            pass  # the 503 went as far as it could; or the server stops
        finally:
            self._turned_away -= 1
            if writer is None:
                connection.close()
            else:
                writer.close()

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        """Read and drop what the client still sends, up to :data:`DISCARD_BYTES` and the
        request timeout, until it pauses for :data:`DISCARD_IDLE_SECONDS`, so that it can read
        the refusal before the connection closes."""
        left = DISCARD_BYTES
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(self.limits.request_timeout):
                while left > 0:
                    chunk = await asyncio.wait_for(
                        reader.read(min(left, 1 << 16)), DISCARD_IDLE_SECONDS
                    )
                    if not chunk:
                        return
                    left -= len(chunk)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        head: list[tuple[str, str, dict[str, str]]],
    ) -> Request:
        """The whole request; its method, path and headers go into ``head`` as soon as they
        are read, so that a refusal or a timeout after that is answered in the route's form."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            # the request line is in what was read, if it came whole
            start = await reader.read(self.limits.max_header_bytes)
            line = start.split(b"\r\n", 1)[0].decode("latin-1") if b"\r\n" in start else ""
            raise _BadRequest(431, "request headers too large", _named(line)) from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest(400, "malformed request line", _named(lines[0]))
        method, target, version = parts
        method, path = method.upper(), _path(target)
        headers: dict[str, str] = {}
        asked = (method, path, headers)
        if version not in _VERSIONS:
            raise _BadRequest(400, "HTTP/1.0 or HTTP/1.1 only", asked)
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise _BadRequest(400, "malformed header line", asked)
                name, value = name.strip().lower(), value.strip()
                if name == "content-length" and headers.get(name, value) != value:
                    raise _BadRequest(400, "conflicting Content-Length headers", asked)
                headers[name] = value
        head.append(asked)
        if not self.security.allows(headers.get("authorization")):
            # before anything about the route (its body limit, a 411) or any body is read
            raise _BadRequest(401, "unauthorized")
        if (method, path) in self.routes and method in ("POST", "PUT", "PATCH"):
            # a body is read by its length only (chunks are not decoded): 411 without one
            if "transfer-encoding" in headers:
                raise _BadRequest(411, "send the body with a Content-Length, not chunked", asked)
            if "content-length" not in headers:
                raise _BadRequest(411, f"a {method} needs a Content-Length", asked)
        text = headers.get("content-length", "0")
        # digits only: int() would also take "+5", " 5" and "1_000"
        if not (text.isascii() and text.isdigit() and len(text) <= 20):
            raise _BadRequest(400, "bad Content-Length", asked)
        length = int(text)
        limit = self._body_limits.get((method, path), self.limits.max_body_bytes)
        if length > limit:
            raise _BadRequest(413, f"{length} bytes, the limit is {limit}", asked)
        if length and version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second without it
        body = await reader.readexactly(length) if length else b""
        return Request(method, path, headers, body, client)

    def _refusal(self, refused: _BadRequest) -> Response:
        """The answer to a request refused before its route: the route's own, when it has one
        and the client may use it, else plain text."""
        if refused.status == 401:
            return self._unauthorized()
        if refused.head is not None:
            method, path, headers = refused.head
            refuse = self._refusals.get((method, path))
            if refuse is not None and self.security.allows(headers.get("authorization")):
                return refuse(refused.status, str(refused))
        return Response(refused.status, "text/plain; charset=utf-8", f"{refused}\n".encode())

    def _unauthorized(self) -> Response:
        challenge = self.security.challenge()
        assert challenge is not None
        return Response(
            401, "text/plain; charset=utf-8", b"unauthorized\n", (("WWW-Authenticate", challenge),)
        )

    def _answer(self, request: Request) -> Response:
        """A whole request of a client that may ask (``_read`` checked its credentials)."""
        route = self.routes.get((request.method, request.path))
        if route is None:
            allowed = sorted(method for method, path in self.routes if path == request.path)
            if allowed:
                return self._not_allowed(request, ", ".join(allowed))
            paths = " or ".join(sorted({path for _, path in self.routes}))
            return Response(404, "text/plain; charset=utf-8", f"not found: try {paths}\n".encode())
        try:
            return route(request)
        except Exception:
            log.exception("request_failed", client=request.client, path=request.path)
            return Response(500, "text/plain; charset=utf-8", b"internal error\n")

    def _not_allowed(self, request: Request, allowed: str) -> Response:
        """405 with the ``Allow`` header HTTP requires, in the path's own form where one of its
        routes answers refusals (JSON for ``/predict``)."""
        detail = f"{request.method} {request.path}: use {allowed}"
        refuse = next(
            (refuse for (_, path), refuse in self._refusals.items() if path == request.path), None
        )
        if refuse is None:
            response = Response(405, "text/plain; charset=utf-8", f"{detail}\n".encode())
        else:
            response = refuse(405, detail)
        return replace(response, headers=(*response.headers, ("Allow", allowed)))

    async def _send(self, writer: asyncio.StreamWriter, response: Response) -> None:
        writer.write(_encode(response))
        await asyncio.wait_for(writer.drain(), self.limits.request_timeout)


_BUSY = Response(
    503,
    "text/plain; charset=utf-8",
    b"every connection is being answered: try again\n",
    (("Retry-After", "1"),),
)


def _encode(response: Response) -> bytes:
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def _close_socket(connection: socket.socket, _: object) -> None:
    connection.close()  # a second close of a socket is nothing


def _path(target: str) -> str:
    """The path of a request target, in origin form (``/predict?x``) or absolute form
    (``http://host/predict``), which HTTP/1.1 servers must accept."""
    if target.lower().startswith(("http://", "https://")):
        try:
            return urlsplit(target).path or "/"
        except ValueError:  # "http://[": an unclosed IPv6 host
            raise _BadRequest(400, "malformed request target") from None
    return target.split("?", 1)[0]


def _named(line: str) -> tuple[str, str, dict[str, str]] | None:
    """Method and path of a request line refused as malformed, where its words still name
    them (so that ``/predict`` answers in its own form), else None."""
    words = line.split()
    if len(words) != 3:
        return None
    try:
        return words[0].upper(), _path(words[1]), {}
    except _BadRequest:
        return None


def start_metrics_server(
    telemetry: Telemetry,
    host: str = DEFAULT_HOST,
    port: int = 9100,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    limits: EndpointLimits | None = None,
    security: EndpointSecurity | None = None,
) -> MetricsServer:
    """Serve ``telemetry`` on ``host:port`` (port 0: any free port; see ``.port``)."""
    if not 0 <= port <= 65535:
        raise MetricsServerError(f"metrics port must be in 0..65535, got {port}")
    if not 0 < stall_seconds < math.inf:  # NaN fails too
        raise MetricsServerError(f"health stall time must be positive, got {stall_seconds}")
    limits = limits or EndpointLimits()
    limits.check()
    server = MetricsServer(telemetry, stall_seconds, limits, security or EndpointSecurity())
    server.start(host, port)
    log.info(
        "metrics_server_started",
        url=server.url,
        stall_seconds=stall_seconds,
        auth=(server.security.challenge() or "none").split(" ")[0].lower(),
    )
    return server
