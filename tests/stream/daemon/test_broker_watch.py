"""Broker health: probe cadence, doubling backoff, the broker_up gauge."""

from __future__ import annotations

from stream.daemon.broker_watch import BrokerWatch
from stream.observe.telemetry import Telemetry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _up(telemetry: Telemetry) -> float | None:
    return telemetry.registry.get_sample_value("streamcl_broker_up")


def test_failures_back_off_doubling_to_the_cap_and_recover():
    clock, telemetry = Clock(), Telemetry()
    watch = BrokerWatch(telemetry, interval=5, backoff=0.5, backoff_max=3, clock=clock)
    assert watch.due()
    watch.succeeded()
    assert _up(telemetry) == 1 and not watch.due()
    clock.now += 5
    assert watch.due()
    waits = [watch.failed("timed out") for _ in range(5)]
    assert waits == [0.5, 1, 2, 3, 3]
    assert _up(telemetry) == 0 and watch.up is False and not watch.due()
    clock.now += 3
    watch.succeeded()
    assert _up(telemetry) == 1 and watch.failures == 0
    assert watch.failed("again") == 0.5


def test_a_client_error_brings_the_next_probe_forward():
    clock = Clock()
    watch = BrokerWatch(Telemetry(), interval=5, backoff=0.5, backoff_max=3, clock=clock)
    watch.succeeded()
    assert not watch.due()
    watch.expedite()
    assert watch.due()
