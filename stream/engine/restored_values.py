"""Numbers read back from a checkpoint, checked before any state takes them.

A checkpoint is outside bytes (a keyless seal says only that they are the bytes written), so a
restore refuses a number no run could have written with a ``ValueError`` that says where,
rather than take it and fail, or quietly misbehave, batches later. JSON gives ints and floats
as such: a string or a bool where a number belongs is refused too.

>>> restored_integer(3, "loop state", "samples_seen", 0)
3
>>> restored_integer(-1, "loop state", "samples_seen", 0)
Traceback (most recent call last):
ValueError: loop state: samples_seen -1 is not an integer in [0, 2**63)
"""

from __future__ import annotations

import math

INT64_END = 1 << 63


def restored_integer(value: object, where: str, what: str, least: int, end: int = INT64_END) -> int:
    """``value`` if it is an int in ``[least, end)``, else a ``ValueError`` naming ``where``."""
    if type(value) is not int or not least <= value < end:
        bound = "2**63" if end == INT64_END else str(end)
        raise ValueError(
            f"{where}: {what} {str(value)[:40]} is not an integer in [{least}, {bound})"
        )
    return value


def restored_float(
    value: object, where: str, what: str, least: float = -math.inf, end: float = math.inf
) -> float:
    """``value`` as a float if it is a finite number in ``[least, end)``, else a ``ValueError``."""
    if (
        type(value) not in (int, float)
        or not math.isfinite(value)  # type: ignore[arg-type]
        or not least <= value < end  # type: ignore[operator]
    ):
        raise ValueError(f"{where}: {what} {str(value)[:40]} is not a finite number in range")
    return float(value)  # type: ignore[arg-type]
