"""Reservoir replay memory (Vitter's algorithm R), the memory i-Blurry's ER baseline uses.

Every sample seen so far is held with probability ``capacity / seen``. Storage is allocated on
the first insert from the sample's shape and dtype; the RNG state travels with the checkpoint so
that a resumed run draws the same replacements and replay batches as an uninterrupted one.
"""

from __future__ import annotations

import torch

from learners.base import LearnerState


class ReservoirMemory:
    """A bounded memory of ``(x, y, level)`` samples with reservoir insertion."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.x: torch.Tensor | None = None
        self.y = torch.empty(capacity, dtype=torch.long)
        self.level = torch.empty(capacity, dtype=torch.long)

    def __len__(self) -> int:
        return self.size

    def add(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> None:
        """Offer each sample of a batch to the reservoir, in order."""
        if self.capacity == 0 or len(y) == 0:
            self.seen += len(y)
            return
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
        x, y, level = x.detach().cpu(), y.cpu(), level.cpu()
        # slot -> index of the batch sample that ends up there; a later sample overwrites an
        # earlier one in the same slot, as one-at-a-time insertion would.
        placed: dict[int, int] = {}
        for i in range(len(y)):
            self.seen += 1
            if self.size < self.capacity:
                placed[self.size] = i
                self.size += 1
            else:
                j = int(torch.randint(0, self.seen, (1,), generator=self.generator))
                if j < self.capacity:
                    placed[j] = i
        if placed:
            slots = torch.tensor(list(placed.keys()), dtype=torch.long)
            rows = torch.tensor(list(placed.values()), dtype=torch.long)
            self.x[slots] = x[rows].to(self.x.dtype)
            self.y[slots] = y[rows]
            self.level[slots] = level[rows]

    def favour_recent(self) -> None:
        """Restart the count of samples offered, as if the memory had just filled up.

        The next sample then replaces a stored one with probability ``capacity / (capacity + 1)``
        instead of ``capacity / seen``, so after a concept drift the samples that follow take
        over a growing share of the memory quickly; from there on it is a reservoir again.
        """
        self.seen = self.size

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``min(n, len(self))`` distinct stored samples, uniformly at random."""
        n = min(n, self.size)
        if self.x is None or n == 0:
            raise ValueError("cannot sample from an empty memory")
        index = torch.randperm(self.size, generator=self.generator)[:n]
        return self.x[index], self.y[index], self.level[index]

    def state_dict(self) -> LearnerState:
        tensors = {
            "y": self.y[: self.size].clone(),
            "level": self.level[: self.size].clone(),
            "rng": self.generator.get_state(),
        }
        if self.x is not None:
            tensors["x"] = self.x[: self.size].clone()
        return LearnerState(tensors, {"capacity": self.capacity, "seen": self.seen})

    def load_state_dict(self, state: LearnerState) -> None:
        if state.meta["capacity"] != self.capacity:
            raise ValueError(
                f"checkpointed memory capacity {state.meta['capacity']} != configured {self.capacity}"
            )
        self.seen = int(state.meta["seen"])
        self.size = len(state.tensors["y"])
        self.generator.set_state(state.tensors["rng"])
        self.y[: self.size] = state.tensors["y"]
        self.level[: self.size] = state.tensors["level"]
        if "x" in state.tensors:
            stored = state.tensors["x"]
            self.x = torch.empty((self.capacity, *stored.shape[1:]), dtype=stored.dtype)
            self.x[: self.size] = stored
