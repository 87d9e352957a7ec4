"""Insertion policies: the slot a sample offered to the memory takes, or ``None`` to drop it.

While the memory has a free slot every policy fills it. Once the memory is full:

- ``reservoir`` — Vitter's algorithm R (1985): the n-th sample offered replaces a uniformly
  random slot with probability ``slots / n``, so each sample seen so far is held with probability
  ``slots / n``. The memory of i-Blurry's ER baseline.
- ``class_balanced`` — GDumb's greedy balancer (Prabhu et al., ECCV 2020), run online as
  i-Blurry's ``gdumb.py`` does: count the memory's classes with the new sample counted in its own
  class, and evict a uniformly random sample of the largest class (ties: the lowest
  ``(level, label)``); the new sample is always stored. The largest count never grows, and a class
  that lost a sample stays within one sample of the largest, so the memory is balanced within one
  sample except for classes the stream offered fewer samples of than their share.
- ``clib`` — CLIB's memory management (Koh et al., ICLR 2022, §4.1): the same class choice, then
  evict the sample of that class with the lowest importance, i.e. whose replay decreased the
  memory's loss least (:mod:`memory.importance`; ties: the lowest slot).

A class is a ``(level, label)`` pair: each hierarchy level has its own label space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from memory.replay_memory import ReplayMemory

Policy = Callable[["ReplayMemory", int], int | None]


def reservoir(memory: ReplayMemory, key: int) -> int | None:
    """Algorithm R; ``memory.seen`` already counts the offered sample, and the count starts
    at ``memory.reservoir_start`` (0, or where :meth:`ReplayMemory.favour_recent` restarted it)."""
    if memory.size < memory.slots:
        return memory.size
    offered = memory.seen - memory.reservoir_start
    j = memory.randbelow(offered)
    return j if j < memory.slots else None


def largest_class(counts: dict[int, int], key: int) -> int:
    """The stored class to evict from when a sample of class ``key`` arrives at a full memory.

    The new sample counts in its own class. A class with nothing stored has nothing to evict:
    when every stored class holds one sample and the new one's class none, the lowest stored
    class gives up its sample.
    """
    best_key, best = -1, 0
    for k, count in counts.items():
        if k == key and count > 0:
            count += 1
        if count > best or (count == best and count > 0 and k < best_key):
            best_key, best = k, count
    return best_key


def class_balanced(memory: ReplayMemory, key: int) -> int | None:
    if memory.size < memory.slots:
        return memory.size
    members = memory.members(largest_class(memory.class_counts, key))
    return int(members[memory.randbelow(len(members))])


def clib(memory: ReplayMemory, key: int) -> int | None:
    if memory.size < memory.slots:
        return memory.size
    assert memory.importance is not None
    members = memory.members(largest_class(memory.class_counts, key))
    return int(members[torch.argmin(memory.importance.scores[members])])


POLICIES: dict[str, Policy] = {
    "reservoir": reservoir,
    "class_balanced": class_balanced,
    "clib": clib,
}
