"""Several ranks as threads of one process, for testing the scale-out syncs without a process
group: :class:`ThreadedCollectives` sums like ``torch.distributed.all_reduce`` over the threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from stream.daemon.distributed import World


class ThreadedGroup:
    """What the ranks of one group share: a barrier and one slot per rank."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list[Any] = [None] * size

    def run(self, work: Callable[[int], Any]) -> list[Any]:
        """``work(rank)`` on every rank at once; the results in rank order (errors re-raised)."""
        results: list[Any] = [None] * self.size
        errors: list[BaseException] = []

        def target(rank: int) -> None:
            try:
                results[rank] = work(rank)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


class ThreadedCollectives:
    """The :class:`stream.daemon.distributed.Collectives` interface over a :class:`ThreadedGroup`
    (sums in rank order, so every rank gets the same bits)."""

    def __init__(self, group: ThreadedGroup, rank: int) -> None:
        self.group = group
        self.world = World(rank, group.size)
        self.device = torch.device("cpu")

    def _all(self, value: Any) -> list[Any]:
        self.group.slots[self.world.rank] = value
        self.group.barrier.wait()
        values = list(self.group.slots)
        self.group.barrier.wait()
        return values

    def sum_(self, tensor: torch.Tensor) -> None:
        values = self._all(tensor.clone())
        total = values[0].clone()
        for value in values[1:]:
            total += value
        tensor.copy_(total)

    def sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        self.sum_(tensor)
        return tensor.tolist()

    def gather_json(self, value: Any) -> list[Any]:
        return self._all(value)

    def broadcast_int(self, value: int, source: int = 0) -> int:
        return int(self._all(value)[source])

    def gather_(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [t.clone() for t in self._all(tensor.clone())]
