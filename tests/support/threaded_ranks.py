"""Several ranks as threads of one process, for testing the scale-out syncs without a process
group: :class:`ThreadedCollectives` sums like ``torch.distributed.all_reduce`` over the threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from stream.daemon.distributed import World


class Rendezvous:
    """A barrier that behaves like a collective: once every rank has arrived, each of them
    returns, even if one aborts the group right after (``threading.Barrier`` let a rank that
    left first and failed break the round its peers had already completed, so they never
    acted on its result: a rank that a real all-reduce would let record its poison did not)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._cond = threading.Condition()
        self._arrived = 0
        self._generation = 0
        self._broken = False

    def wait(self) -> None:
        with self._cond:
            if self._broken:
                raise threading.BrokenBarrierError
            generation = self._generation
            self._arrived += 1
            if self._arrived == self.size:
                self._arrived = 0
                self._generation += 1
                self._cond.notify_all()
                return
            done = self._cond.wait_for(
                lambda: self._generation != generation or self._broken, self.timeout
            )
            if self._generation != generation:
                return
            self._broken = True
            self._cond.notify_all()
            if not done:
                raise threading.BrokenBarrierError("timed out waiting for the other ranks")
            raise threading.BrokenBarrierError

    @property
    def n_waiting(self) -> int:
        """How many ranks wait in the current round (as ``threading.Barrier.n_waiting``)."""
        with self._cond:
            return self._arrived

    def abort(self) -> None:
        with self._cond:
            self._broken = True
            self._cond.notify_all()


class ThreadedGroup:
    """What the ranks of one group share: a rendezvous and one slot per rank."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = Rendezvous(size, timeout=30)
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
