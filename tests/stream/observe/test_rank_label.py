"""Every series of a scaled-out worker carries its rank."""

from __future__ import annotations

from prometheus_client import generate_latest

from stream.observe.rank_label import RankLabelledRegistry
from stream.observe.telemetry import Telemetry


def test_every_exposed_sample_has_the_rank_label():
    telemetry = Telemetry(registry=RankLabelledRegistry(2))
    telemetry.samples.labels("acil").inc(3)
    telemetry.set_consumer_lag("t", 4, 17)
    registry = telemetry.registry
    assert (
        registry.get_sample_value("streamcl_samples_total", {"learner": "acil", "rank": "2"}) == 3
    )
    lag = {"topic": "t", "partition": "4", "rank": "2"}
    assert registry.get_sample_value("streamcl_consumer_lag", lag) == 17
    lines = [
        line for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert lines and all('rank="2"' in line for line in lines)
