"""The order in which a recorded stream's samples and their delayed labels arrive.

With a label delay of ``d`` samples, sample ``i`` arrives unlabelled (a prediction request) and
its label arrives right after request ``i + d``; the labels of the last ``d`` samples follow the
last request, in stream order. A delay of 0 puts each label right after its own request.
``streamcl replay --label-delay``, ``streamcl publish --label-delay`` and the daemon demo all
use this one order, so a replay scores exactly what a daemon fed the published topic scores.

>>> list(delayed_order(3, 1))
[('request', 0), ('request', 1), ('label', 0), ('request', 2), ('label', 1), ('label', 2)]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

Event = tuple[Literal["request", "label"], int]


def delayed_order(n: int, delay: int) -> Iterator[Event]:
    """Requests and labels of ``n`` samples with labels ``delay`` samples late."""
    if delay < 0:
        raise ValueError(f"label delay must be >= 0 samples, got {delay}")
    for i in range(n):
        yield "request", i
        if i >= delay:
            yield "label", i - delay
    for j in range(max(n - delay, 0), n):
        yield "label", j
