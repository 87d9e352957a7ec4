"""When a recorded stream's labels arrive: a fixed delay or a seeded distribution of delays.

With a delay of ``d`` samples, sample ``i`` arrives unlabelled (a prediction request) and its
label arrives right after request ``i + d``; labels due after the last request follow it, by
due position, then in stream order. A delay of 0 puts each label right after its own request.
A delay is given as text (``streamcl schedule/replay/publish --label-delay``):

- ``N``: every label ``N`` samples late;
- ``uniform:A-B``: each label ``A`` to ``B`` samples late (inclusive), uniformly;
- ``exponential:MEAN``: each label ``floor(Exp(MEAN))`` samples late.

Every delay is at most :data:`MAX_LABEL_DELAY` samples (a longer one is refused, a drawn one
capped): far beyond any stream, and small enough that positions plus delays stay exact integers.

Drawn delays are seeded (the stream's seed), so ``streamcl replay``, ``streamcl publish`` and the
daemon demo all use the same order, and a replay scores exactly what a daemon fed the
published topic scores.

>>> list(delayed_order(3, 1))
[('request', 0), ('request', 1), ('label', 0), ('request', 2), ('label', 1), ('label', 2)]
>>> label_delays("uniform:2-5", 6, seed=0).tolist()
[3, 5, 5, 2, 2, 3]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Literal

import numpy as np

Event = tuple[Literal["request", "label"], int]
_FORMS = "N, uniform:A-B or exponential:MEAN"
MAX_LABEL_DELAY = 1 << 40


class LabelDelayError(ValueError):
    """A label delay that cannot be understood; the message shows the accepted forms."""


def chosen_label_delay(
    given: str | int | None, recorded: str | int | None, stream: object
) -> str | int | None:
    """The delay a run uses, checked: ``given`` on the command line, else the one ``recorded``
    in the header of ``stream`` (a path), whose error then says where it came from."""
    if given is not None:
        return check_label_delay(given)
    if recorded is None:
        return None
    try:
        return check_label_delay(recorded)
    except LabelDelayError as exc:
        raise LabelDelayError(f"{stream}: the header's label_delay: {exc}") from None


def check_label_delay(spec: str | int) -> str | int:
    """``spec`` as stored (an int for a fixed delay), or :class:`LabelDelayError`."""
    text = str(spec).strip()
    if len(text) > 1000:
        raise LabelDelayError(f"label delay {text[:40]!r}...: expected {_FORMS}")
    fixed = re.fullmatch(r"\d+", text)
    uniform = re.fullmatch(r"uniform:(\d+)-(\d+)", text)
    exponential = re.fullmatch(r"exponential:(\d+(\.\d*)?)", text)
    largest = (
        int(text)
        if fixed
        else int(uniform.group(2))
        if uniform
        else float(exponential.group(1))
        if exponential
        else None
    )
    if largest is not None and largest > MAX_LABEL_DELAY:
        raise LabelDelayError(
            f"label delay {spec!r}: at most {MAX_LABEL_DELAY} samples, got {largest:g}"
        )
    if fixed:
        return int(text)
    if uniform and int(uniform.group(1)) <= int(uniform.group(2)):
        return text
    if exponential and 0 < float(exponential.group(1)) < math.inf:
        return text
    raise LabelDelayError(f"label delay {spec!r}: expected {_FORMS} (samples, >= 0)")


def label_delays(spec: str | int, n: int, seed: int) -> np.ndarray:
    """The delay of each of ``n`` labels, in samples."""
    checked = check_label_delay(spec)
    if isinstance(checked, int):
        return np.full(n, checked, dtype=np.int64)
    rng = np.random.default_rng([seed, 18])  # its own stream: schedules use the seed too
    kind, _, value = checked.partition(":")
    if kind == "uniform":
        low, high = (int(v) for v in value.split("-"))
        return rng.integers(low, high + 1, n).astype(np.int64)
    drawn = np.floor(rng.exponential(float(value), n))
    return np.minimum(drawn, MAX_LABEL_DELAY).astype(np.int64)


def delayed_order(n: int, delays: int | np.ndarray) -> Iterator[Event]:
    """Requests and labels of ``n`` samples, label ``i`` ``delays[i]`` samples late."""
    late = np.full(n, delays, np.int64) if isinstance(delays, int) else np.asarray(delays)
    if (isinstance(delays, int) and delays < 0) or (n and int(late.min()) < 0):
        raise ValueError(f"label delays must be >= 0 samples, got {delays}")
    due = np.arange(n) + late
    order = np.lexsort((np.arange(n), due))  # by due position, then stream order
    labels = iter(order.tolist())
    pending = next(labels, None)
    for i in range(n):
        yield "request", i
        while pending is not None and due[pending] <= i:
            yield "label", pending
            pending = next(labels, None)
    while pending is not None:
        yield "label", pending
        pending = next(labels, None)
