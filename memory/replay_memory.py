"""The bounded replay memory: stored samples, their embeddings, an insertion policy, a retrieval.

Each stored sample keeps its input, label, hierarchy level, stream id and arrival (how many
samples had been offered to the memory before it). The memory holds at most ``capacity``
samples and at most ``max_bytes`` bytes; every sample has the same shape, so the byte bound is a
number of slots, fixed at the first insert from the input's size, the embedding size and the
per-sample bookkeeping (:meth:`ReplayMemory.slot_bytes`). Which sample takes which slot is the
policy's choice (:mod:`memory.policies`), which slots a replay batch holds the retrieval's
(:mod:`memory.retrieval`).

How a learner hands over embeddings and losses: two optional callables given at construction,

- ``embed(x) -> [n, d]``: features of inputs with the learner's current backbone (no grad);
- ``loss(x, y, level) -> [n]``: per-sample loss with the current model (no grad).

The memory calls ``embed`` only when its retrieval needs embeddings (``nearest``): on the samples
it stores, on the batch a learner passes as ``sample(n, query=x)``, and to refresh stale
embeddings; it calls ``loss`` only for the ``clib`` policy. A config that needs a callable the
learner does not give fails at construction (:func:`memory.build_memory`).

Stale embeddings: the backbone trains, so stored embeddings age. After each :meth:`add` (one
learner micro-batch) the ``refresh_chunk`` stored samples whose embeddings are oldest are embedded
again with the current backbone, so no embedding is more than ``ceil(size / refresh_chunk)``
insert calls old and every call costs the same (no periodic latency spike, which a daemon's
update-time histogram would show). :meth:`refresh_embeddings` re-embeds everything at once.

CLIB importance: each :meth:`sample_batch` counts as one training step on the batch it returns;
the memory's loss after that step is measured at the memory's next call (``sample`` or ``add``),
by when the learner has applied the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from learners.state.learner_state import LearnerState
from memory import retrieval
from memory.config import MemoryConfig, MemoryConfigError
from memory.faiss_index import Calibration, EmbeddingIndex, faiss_available
from memory.importance import SampleImportance
from memory.policies import POLICIES

Embed = Callable[[torch.Tensor], torch.Tensor]
SampleLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Inputs go through ``embed`` and ``loss`` in chunks of this many, to bound peak memory.
CHUNK = 512
# y, level, class key, id and arrival: one int64 each.
_BOOKKEEPING_BYTES = 5 * 8


class SlotMeta:
    """numpy views of a memory's per-slot int64 tensors (labels, levels, class keys, ids,
    arrivals), sharing their storage: insertion writes a few elements per batch, and a numpy
    element write costs a fraction of a tensor's."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.y, self.level, self.keys, self.ids, self.arrival = (t.numpy() for t in tensors)


FEW = 4
"""Samples of a batch that :meth:`ReplayMemory.add` stores by element writes (more: by index)."""


def class_key(level: int, label: int) -> int:
    """One int64 per ``(level, label)`` class that sorts like the pair."""
    return (level << 32) + label


@dataclass(frozen=True)
class ReplayBatch:
    """Stored samples drawn for replay, with where (``slots``) and when (``arrival``) they came."""

    x: torch.Tensor
    y: torch.Tensor
    level: torch.Tensor
    ids: torch.Tensor
    arrival: torch.Tensor
    slots: torch.Tensor


class ReplayMemory:
    """A bounded store of ``(x, y, level, id, arrival)`` samples and, for nearest retrieval, an
    embedding of each in a nearest-neighbour index."""

    def __init__(
        self,
        config: MemoryConfig,
        seed: int = 0,
        embed: Embed | None = None,
        loss: SampleLoss | None = None,
    ) -> None:
        if config.retrieval == "nearest" and embed is None:
            raise ValueError("retrieval 'nearest' needs an embed function")
        if config.policy == "clib" and loss is None:
            raise ValueError("policy 'clib' needs a per-sample loss function")
        self.config = config
        self.capacity = config.capacity
        self.slots = config.capacity  # fixed at the first insert, when the byte bound is known
        self.seen = 0
        self.reservoir_start = 0  # offered samples the reservoir's count leaves out
        self.steps = 0  # add() calls: the clock that embeddings age by
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._draw_into = torch.empty(1, dtype=torch.long)
        self._policy = POLICIES[config.policy]
        self._embed = embed
        self._loss = loss
        self.class_counts: dict[int, int] = {}
        self.x: torch.Tensor | None = None
        self.y = torch.empty(0, dtype=torch.long)
        self.level = torch.empty(0, dtype=torch.long)
        self.keys = torch.empty(0, dtype=torch.long)
        self.ids = torch.empty(0, dtype=torch.long)
        self.arrival = torch.empty(0, dtype=torch.long)
        self.index: EmbeddingIndex | None = None
        self.embedded_at = torch.empty(0, dtype=torch.long)
        self.importance: SampleImportance | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def uses_embeddings(self) -> bool:
        return self.config.retrieval == "nearest"

    def slot_bytes(self, input_bytes: int, dim: int | None) -> int:
        """Bytes one stored sample costs: input, bookkeeping, embedding and faiss's copy of it.

        An ivf index's centroids (4·√n vectors, 1.3% of them at 100k) are not counted."""
        return self.slot_bytes_of(input_bytes, dim, self.config)

    @staticmethod
    def slot_bytes_of(input_bytes: int, dim: int | None, config: MemoryConfig) -> int:
        """:meth:`slot_bytes` of a memory of ``config``, before one is built."""
        total = input_bytes + _BOOKKEEPING_BYTES
        if dim is not None:
            faiss_copy = config.index != "torch" and faiss_available()
            # embedding, embedded_at, and faiss's vector plus its id in an ivf index
            total += 4 * dim + 8 + (4 * dim + 8 if faiss_copy else 0)
        if config.policy == "clib":
            total += 4 + 4 + 1  # importance, previous loss, measured flag
        return total

    @property
    def index_calibration(self) -> Calibration | None:
        """The approximate (ivf) index's ``nprobe`` and measured recall; None while exact."""
        return self.index.calibration if self.index is not None else None

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored samples and their index (0 before the first insert)."""
        if self.x is None:
            return 0
        tensors = (self.x, self.y, self.level, self.keys, self.ids, self.arrival, self.embedded_at)
        total = sum(t.numel() * t.element_size() for t in tensors)
        if self.index is not None:
            total += self.index.nbytes
        if self.importance is not None:
            total += self.importance.nbytes
        return total

    def favour_recent(self) -> None:
        """Restart the reservoir's count, as if the memory had just filled up.

        The next sample then replaces a stored one with probability ``slots / (slots + 1)``
        instead of ``slots / seen``, so after a concept drift the samples that follow take over a
        growing share of the memory quickly; from there on it is a reservoir again. Arrivals and
        ids keep counting every sample. Other policies are unaffected.
        """
        self.reservoir_start = self.seen - self.size

    def randbelow(self, n: int) -> int:
        """A uniform draw from ``[0, n)`` off the memory's generator: the value
        ``torch.randint(0, n, (1,))`` draws, at half its cost (no new tensor per draw; policies
        draw once per offered sample)."""
        return int(self._draw_into.random_(0, n, generator=self.generator).item())

    def members(self, key: int) -> torch.Tensor:
        """Stored slots of class ``key``, ascending."""
        return torch.nonzero(self.keys[: self.size] == key).flatten()

    def add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        level: torch.Tensor,
        ids: torch.Tensor | None = None,
    ) -> None:
        """Offer each sample of a batch to the memory, in order; ``ids`` default to arrivals."""
        self._measure_importance()
        self.steps += 1
        n = len(y)
        start = self.seen
        if self.capacity == 0 or n == 0:
            self.seen += n
            self._refresh_stale()
            return
        x, y, level = x.detach().cpu(), y.detach().cpu().long(), level.detach().cpu().long()
        if self.x is None:
            self._allocate(x)
        # slot -> batch row that ends up there; a later sample overwrites an earlier one in the
        # same slot, as one-at-a-time insertion would.
        placed: dict[int, int] = {}
        # Python ints: indexing a tensor element by element costs more than the policy itself
        for i, (lvl, label) in enumerate(zip(level.tolist(), y.tolist(), strict=True)):
            self.seen += 1
            key = class_key(lvl, label)
            slot = self._policy(self, key)
            if slot is not None:
                self._take(slot, key, lvl, label)
                placed[slot] = i
        if len(placed) <= FEW and self.index is None:
            # a full memory stores few of a batch, often none: element writes cost less than
            # building index tensors
            assert self.x is not None
            meta = self._meta
            for slot, i in placed.items():
                self.x[slot] = x[i]
                meta.arrival[slot] = start + i
                meta.ids[slot] = start + i if ids is None else int(ids[i])
        elif placed:
            assert self.x is not None
            slots = torch.tensor(list(placed), dtype=torch.long)
            rows = torch.tensor(list(placed.values()), dtype=torch.long)
            self.x[slots] = x[rows].to(self.x.dtype)
            self.arrival[slots] = start + rows
            self.ids[slots] = start + rows if ids is None else ids.detach().cpu().long()[rows]
            if self.index is not None:
                self.index.write(slots, self._embed_inputs(x[rows]))
                self.embedded_at[slots] = self.steps
        self._refresh_stale()

    def _take(self, slot: int, key: int, level: int, label: int) -> None:
        meta = self._meta
        if slot < self.size:
            old = int(meta.keys[slot])
            self.class_counts[old] -= 1
            if self.class_counts[old] == 0:
                del self.class_counts[old]
        else:
            self.size += 1
        meta.keys[slot], meta.y[slot], meta.level[slot] = key, label, level
        self.class_counts[key] = self.class_counts.get(key, 0) + 1
        if self.importance is not None:
            peers = self.members(key)
            self.importance.stored(slot, peers[peers != slot], self.size)

    def _allocate(self, x: torch.Tensor, dim: int | None = None) -> None:
        """Storage for all slots, sized by the first input (and embedding) seen."""
        if self.uses_embeddings and dim is None:
            dim = int(self._embed_inputs(x[:1]).shape[1])
        row = x[0]
        self.slots = self.capacity
        if self.config.max_bytes is not None:
            per_slot = self.slot_bytes(row.numel() * row.element_size(), dim)
            self.slots = min(self.capacity, self.config.max_bytes // per_slot)
            if self.slots == 0:
                raise MemoryConfigError(
                    f"memory max_bytes={self.config.max_bytes} cannot hold one sample "
                    f"({per_slot} bytes each)"
                )
        self.x = torch.zeros((self.slots, *row.shape), dtype=row.dtype)
        for name in ("y", "level", "keys", "ids", "arrival"):
            setattr(self, name, torch.zeros(self.slots, dtype=torch.long))
        self._meta = SlotMeta(self.y, self.level, self.keys, self.ids, self.arrival)
        if dim is not None:
            cfg = self.config
            self.index = EmbeddingIndex(
                self.slots, dim, cfg.index, cfg.approximate_from, cfg.nprobe, cfg.target_recall
            )
            self.embedded_at = torch.zeros(self.slots, dtype=torch.long)
        if self.config.policy == "clib":
            self.importance = SampleImportance(
                self.slots, self.config.importance_period, self.config.importance_decay
            )

    def _embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        assert self._embed is not None
        parts = [self._embed(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
        embeddings = torch.cat(parts).detach().to("cpu", torch.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(x):
            raise ValueError(
                f"embed returned shape {tuple(embeddings.shape)} for {len(x)} inputs; "
                "expected [n, dim]"
            )
        return embeddings

    def _refresh_stale(self) -> None:
        chunk = self.config.refresh_chunk
        if self.index is None or chunk == 0:
            return
        stale = torch.nonzero(self.embedded_at[: self.size] < self.steps).flatten()
        oldest = stale[torch.argsort(self.embedded_at[stale], stable=True)[:chunk]]
        if len(oldest):
            self._re_embed(oldest)

    def _re_embed(self, slots: torch.Tensor) -> None:
        assert self.index is not None and self.x is not None
        self.index.write(slots, self._embed_inputs(self.x[slots]))
        self.embedded_at[slots] = self.steps

    def refresh_embeddings(self) -> None:
        """Embed every stored sample again with the learner's current backbone."""
        if self.index is not None and self.size:
            self._re_embed(torch.arange(self.size))

    def _measure_importance(self) -> None:
        if self.importance is None or not self.importance.due() or self.size == 0:
            return
        assert self._loss is not None and self.x is not None
        bounds = [(i, min(i + CHUNK, self.size)) for i in range(0, self.size, CHUNK)]
        losses = [self._loss(self.x[a:b], self.y[a:b], self.level[a:b]).detach() for a, b in bounds]
        self.importance.update(torch.cat(losses).cpu())

    def sample(
        self, n: int, query: torch.Tensor | None = None, query_stored: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, level)`` of ``min(n, len(self))`` distinct stored samples (see
        :meth:`sample_batch`)."""
        slots = self._draw(n, query, query_stored)
        assert self.x is not None
        return self.x[slots], self.y[slots], self.level[slots]

    def sample_batch(
        self, n: int, query: torch.Tensor | None = None, query_stored: bool = False
    ) -> ReplayBatch:
        """``min(n, len(self))`` distinct stored samples chosen by the configured retrieval.

        ``query`` is the current stream batch's inputs; ``nearest`` retrieval needs it (and
        embeds it), the other modes ignore it, so a learner may always pass it.
        ``query_stored``: the query batch was the last one added (a learner that stores the
        stream batch before its steps); ``nearest`` then leaves its samples out, else each
        would be its own query's nearest and the replay a copy of the stream batch.
        """
        slots = self._draw(n, query, query_stored)
        assert self.x is not None
        return ReplayBatch(
            self.x[slots],
            self.y[slots],
            self.level[slots],
            self.ids[slots],
            self.arrival[slots],
            slots,
        )

    def _draw(self, n: int, query: torch.Tensor | None, query_stored: bool = False) -> torch.Tensor:
        """The slots of a replay batch (one training step, for CLIB's importance)."""
        self._measure_importance()
        n = min(n, self.size)
        if n <= 0:
            raise ValueError("cannot sample from an empty memory")
        mode = self.config.retrieval
        if mode == "nearest":
            if query is None:
                raise ValueError("retrieval 'nearest' needs the stream batch: sample(n, query=x)")
            assert self.index is not None
            queries = self._embed_inputs(query.detach())
            # the query batch's own samples: the last len(query) arrivals, where stored
            own = self.arrival[: self.size] >= self.seen - len(query) if query_stored else None
            slots = retrieval.nearest(self.index, queries, n, self.generator, own)
        elif mode == "class_balanced":
            slots = retrieval.balanced(self.keys[: self.size], n, self.generator)
        elif mode == "per_level":
            slots = retrieval.balanced(self.level[: self.size], n, self.generator)
        else:
            slots = retrieval.uniform(self.size, n, self.generator)
        if self.importance is not None:
            self.importance.replayed_in_step(slots)
        return slots

    def state_dict(self) -> LearnerState:
        meta: dict[str, Any] = {
            "capacity": self.capacity,
            "slots": self.slots,
            "seen": self.seen,
            "reservoir_start": self.reservoir_start,
            "steps": self.steps,
            "policy": self.config.policy,
            "retrieval": self.config.retrieval,
        }
        state = LearnerState({"rng": self.generator.get_state()}, meta)
        if self.x is None:
            return state
        n = self.size
        for name in ("x", "y", "level", "ids", "arrival"):
            state.tensors[name] = getattr(self, name)[:n].clone()
        if self.index is not None:
            state.put("index", self.index.state_dict())
            state.tensors["embedded_at"] = self.embedded_at[:n].clone()
        if self.importance is not None:
            state.put("importance", self.importance.state_dict(n))
        return state

    def check_samples(self, input_shape: Sequence[int], num_classes: Sequence[int]) -> None:
        """``ValueError`` unless every stored sample has ``input_shape`` and a level and label in
        the label space ``num_classes`` (per level): for a learner after :meth:`load_state_dict`,
        since a checkpoint is outside bytes and a label beyond its level's classes would fail
        only when it is replayed."""
        n = self.size
        if self.x is None or n == 0:
            return
        if self.seen < n:
            raise ValueError(f"checkpointed memory holds {n} samples but has seen {self.seen}")
        if tuple(self.x.shape[1:]) != tuple(input_shape):
            raise ValueError(
                f"checkpointed memory holds inputs of shape {tuple(self.x.shape[1:])}, this "
                f"problem's is {tuple(input_shape)}"
            )
        level, y = self.level[:n], self.y[:n]
        if bool(((level < 0) | (level >= len(num_classes))).any()):
            raise ValueError(f"checkpointed memory holds a level outside [0, {len(num_classes)})")
        limits = torch.tensor(list(num_classes), dtype=torch.long)[level]
        if bool(((y < 0) | (y >= limits)).any()):
            raise ValueError("checkpointed memory holds a label outside its level's classes")
        arrival = self.arrival[:n]
        if bool(((arrival < 0) | (arrival >= self.seen)).any()):
            raise ValueError(f"checkpointed memory holds an arrival outside [0, {self.seen})")

    def load_state_dict(self, state: LearnerState) -> None:
        meta, tensors = state.meta, state.tensors
        for option in ("capacity", "policy", "retrieval"):
            configured = getattr(self.config, option)
            if meta[option] != configured:
                raise ValueError(
                    f"checkpointed memory {option} {meta[option]!r} != configured {configured!r}"
                )
        self.generator.set_state(tensors["rng"])
        self.seen = int(meta["seen"])
        self.reservoir_start = int(meta.get("reservoir_start", 0))
        self.steps = int(meta["steps"])
        if "x" not in tensors:
            return
        stored = tensors["x"]
        dim = int(meta["index"]["dim"]) if "index" in meta else None
        self._allocate(stored, dim)
        if self.slots != meta["slots"]:
            raise ValueError(
                f"checkpointed memory has {meta['slots']} slots, this config gives {self.slots}"
            )
        n = self.size = len(stored)
        for name in ("x", "y", "level", "ids", "arrival"):
            getattr(self, name)[:n] = tensors[name]
        self.keys[:n] = (self.level[:n] << 32) + self.y[:n]
        keys, counts = torch.unique(self.keys[:n], return_counts=True)
        self.class_counts = dict(zip(keys.tolist(), counts.tolist(), strict=True))
        if self.index is not None:
            self.index.load_state_dict(state.part("index"))
            self.embedded_at[:n] = tensors["embedded_at"]
        if self.importance is not None:
            self.importance.load_state_dict(state.part("importance"))
