"""The process group of a scaled-out daemon: who this worker is, which partitions it reads.

Scale-out uses ``torch.distributed`` (gloo on CPU, NCCL on GPU) as launched by ``torchrun``,
which starts the workers, runs the c10d rendezvous and restarts the whole group when one worker
fails. A worker learns its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); the command line reads them, at the edge, into
a :class:`World`.

Kafka partitions are the unit of parallel input. Each rank reads a fixed, disjoint set of the
topic's partitions, assigned manually by rank (no consumer-group rebalancing): partition ``i`` of
the sorted list goes to rank ``i mod world_size``. A restarted group with another world size
computes the assignment afresh, and since every rank resumes the offsets of every partition from
the last global checkpoint, a partition that changes hands continues where it was.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This worker's rank among ``size`` workers of one model."""

    rank: int
    size: int
    local_rank: int = 0
    # Where the rendezvous store is, and which start of the group this is (torchrun counts
    # restarts); each start meets under its own prefix in the store.
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    restart: int = 0
    # True under torchrun, whose agent hosts the store; otherwise rank 0 hosts it.
    agent_store: bool = False

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.size} workers")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> World | None:
        """The world torchrun describes in ``environ``; None when not launched by torchrun."""
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            return None
        try:
            return cls(
                rank=int(environ["RANK"]),
                size=int(environ["WORLD_SIZE"]),
                local_rank=int(environ.get("LOCAL_RANK", "0")),
                master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
                master_port=int(environ.get("MASTER_PORT", "29500")),
                restart=int(environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
                agent_store=environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
            )
        except ValueError as exc:
            raise ValueError(f"torchrun environment: {exc}") from None


def assign_partitions(partitions: list[int], world: World) -> list[int]:
    """The partitions ``world.rank`` reads: every ``size``-th of the sorted list from ``rank``."""
    return sorted(partitions)[world.rank :: world.size]


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def join(world: World, device: torch.device, timeout_seconds: float) -> None:
    """Join the process group through the rendezvous store torchrun set up. A collective that
    waits longer than ``timeout_seconds`` for a peer fails, so a group whose member died ends
    and torchrun can restart it.

    Each start of the group meets under its own store prefix: after a restart, the addresses
    the previous start's ranks published are still in the agent's store, and a new rank that
    read one tried to connect to a dead worker (seen with torch 2.13 and gloo)."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    timeout = datetime.timedelta(seconds=timeout_seconds)
    store = dist.TCPStore(
        world.master_addr,
        world.master_port,
        world.size,
        is_master=world.rank == 0 and not world.agent_store,
        timeout=timeout,
    )
    dist.init_process_group(
        backend_for(device),
        store=dist.PrefixStore(f"streamcl/start-{world.restart}", store),
        rank=world.rank,
        world_size=world.size,
        timeout=timeout,
    )


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class Collectives:
    """The few collectives the daemon needs, on tensors of the group's device."""

    def __init__(self, world: World, device: torch.device) -> None:
        self.world = world
        self.device = device

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64), the same on every rank."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world.size > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over ranks, in place."""
        if self.world.size > 1:
            dist.all_reduce(tensor)

    def gather_(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape on every rank), in rank order."""
        if self.world.size == 1:
            return [tensor]
        gathered = [torch.empty_like(tensor) for _ in range(self.world.size)]
        dist.all_gather(gathered, tensor)
        return gathered

    def broadcast_int(self, value: int, source: int = 0) -> int:
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        if self.world.size > 1:
            dist.broadcast(tensor, source)
        return int(tensor.item())

    def gather_json(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (JSON-serialisable), in rank order, on every rank; JSON in
        byte tensors rather than ``all_gather_object``, which pickles."""
        data = json.dumps(value, separators=(",", ":")).encode()
        if self.world.size == 1:
            return [json.loads(data)]
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world.size)]
        dist.all_gather(sizes, size)
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        gathered = [torch.zeros_like(padded) for _ in range(self.world.size)]
        dist.all_gather(gathered, padded)
        return [
            json.loads(bytes(t[: int(s.item())].cpu().tolist()))
            for t, s in zip(gathered, sizes, strict=True)
        ]
