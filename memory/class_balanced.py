"""Class-balanced replay memory: when full, a new sample replaces one of the largest class.

This is the replacement rule of the memory PL-FMS inherits from CLIB (Koh et al., ICLR 2022;
``samplewise_importance_memory`` in naver-ai/i-Blurry and Hyun1A/HLE): count the incoming
sample's class, take the class with the most samples (the first such class to have entered the
memory on a tie, as ``np.argmax`` over classes in order of arrival does), and overwrite one of
its samples. CLIB picks the sample of least importance; this memory picks a seeded random one,
which needs no per-sample loss bookkeeping. A class is a ``(level, label)`` pair, so coarse and
fine classes of a hierarchy are balanced alike. New classes thus enter a full memory at once and
grow to their share, where a reservoir admits them at the rate ``capacity / seen``.
"""

from __future__ import annotations

import torch

from learners.base import LearnerState


class ClassBalancedMemory:
    """A bounded memory of ``(x, y, level)`` samples, kept balanced over classes."""

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
        # (level, label) -> samples held, in order of first arrival (the tie-break order).
        self.counts: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return self.size

    def add(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> None:
        """Insert each sample of a batch, in order, evicting from the largest class when full."""
        self.seen += len(y)
        if self.capacity == 0 or len(y) == 0:
            return
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
        x, y, level = x.detach().cpu(), y.cpu(), level.cpu()
        for i in range(len(y)):
            key = (int(level[i]), int(y[i]))
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                slot = self._slot_to_replace(key)
                old = (int(self.level[slot]), int(self.y[slot]))
                self.counts[old] -= 1
            self.x[slot] = x[i].to(self.x.dtype)
            self.y[slot] = y[i]
            self.level[slot] = level[i]
            self.counts[key] = self.counts.get(key, 0) + 1

    def _slot_to_replace(self, incoming: tuple[int, int]) -> int:
        counts = dict(self.counts)
        counts[incoming] = counts.get(incoming, 0) + 1
        largest = max(counts, key=lambda k: counts[k])
        lvl, label = largest
        slots = torch.nonzero((self.level == lvl) & (self.y == label)).flatten()
        return int(slots[torch.randint(0, len(slots), (1,), generator=self.generator)])

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``min(n, len(self))`` distinct stored samples, uniformly at random."""
        n = min(n, self.size)
        if self.x is None or n == 0:
            raise ValueError("cannot sample from an empty memory")
        index = torch.randperm(self.size, generator=self.generator)[:n]
        return self.x[index], self.y[index], self.level[index]

    def state_dict(self) -> LearnerState:
        order = torch.tensor([[lvl, label, n] for (lvl, label), n in self.counts.items()])
        tensors = {
            "y": self.y[: self.size].clone(),
            "level": self.level[: self.size].clone(),
            "rng": self.generator.get_state(),
            "classes": order.reshape(-1, 3).to(torch.long),
        }
        if self.x is not None:
            tensors["x"] = self.x[: self.size].clone()
        return LearnerState(tensors, {"capacity": self.capacity, "seen": self.seen})

    def load_state_dict(self, state: LearnerState) -> None:
        if state.meta["capacity"] != self.capacity:
            raise ValueError(
                f"checkpointed memory capacity {state.meta['capacity']} "
                f"!= configured {self.capacity}"
            )
        self.seen = int(state.meta["seen"])
        self.size = len(state.tensors["y"])
        self.generator.set_state(state.tensors["rng"])
        self.y[: self.size] = state.tensors["y"]
        self.level[: self.size] = state.tensors["level"]
        self.counts = {(int(r[0]), int(r[1])): int(r[2]) for r in state.tensors["classes"]}
        if "x" in state.tensors:
            stored = state.tensors["x"]
            self.x = torch.empty((self.capacity, *stored.shape[1:]), dtype=stored.dtype)
            self.x[: self.size] = stored
