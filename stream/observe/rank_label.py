"""A Prometheus registry that adds a ``rank`` label to every sample it exposes.

The workers of a scaled-out daemon each serve their own ``/metrics``; the ``rank`` label tells
their series apart once Prometheus scrapes them all (and lets a dashboard sum samples/s over the
ranks). The metrics themselves are defined once, in :mod:`stream.observe.telemetry`, unaware of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric


class RankLabelledRegistry(CollectorRegistry):
    """Collects like :class:`CollectorRegistry`, with ``rank="<rank>"`` on every sample."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = str(rank)

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            for sample in metric.samples:
                labelled.add_sample(
                    sample.name,
                    {**sample.labels, "rank": self.rank},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
            yield labelled
