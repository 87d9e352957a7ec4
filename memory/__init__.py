"""Replay memories: bounded sample stores with insertion policies, retrieval modes and a
nearest-neighbour index of sample embeddings (FAISS, or exact torch search without it).

``build_memory`` is the one constructor learners call, so a learner's ``memory`` config option
decides which memory it gets; the learner adds what the config may need, an ``embed`` and a
per-sample ``loss`` function (see :mod:`memory.replay_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from learners.machine_memory import memory_bytes
from memory.config import MemoryConfig, MemoryConfigError
from memory.replay_memory import Embed, ReplayBatch, ReplayMemory, SampleLoss

__all__ = ["MemoryConfig", "MemoryConfigError", "ReplayBatch", "ReplayMemory", "build_memory"]


def build_memory(
    config: MemoryConfig,
    seed: int,
    embed: Embed | None = None,
    loss: SampleLoss | None = None,
    input_shape: Sequence[int] | None = None,
) -> ReplayMemory:
    """The memory ``config`` asks for, seeded; a config option the learner cannot serve (it gives
    no ``embed`` or ``loss`` function) is a :class:`MemoryConfigError`, and so, given the
    samples' ``input_shape``, is a memory larger than this machine's memory (it is allocated
    whole at the first sample: refused now, not as an allocation failure, or an OOM kill, in
    the middle of a stream)."""
    if input_shape is not None:
        _refuse_beyond_this_machine(config, input_shape)
    if config.retrieval == "nearest" and embed is None:
        raise MemoryConfigError(
            "invalid learner config: memory.retrieval: 'nearest' needs sample embeddings, and "
            "this learner gives its memory none; use uniform, class_balanced or per_level"
        )
    if config.policy == "clib" and loss is None:
        raise MemoryConfigError(
            "invalid learner config: memory.policy: 'clib' needs per-sample losses, and this "
            "learner gives its memory none; use reservoir or class_balanced"
        )
    return ReplayMemory(config, seed=seed, embed=embed, loss=loss)


def _refuse_beyond_this_machine(config: MemoryConfig, input_shape: Sequence[int]) -> None:
    """Refuse a ``capacity`` whose float32 inputs and bookkeeping alone (embeddings and index
    left out) exceed the physical memory, unless ``max_bytes`` bounds the memory anyway; and a
    ``max_bytes`` below what one such sample costs (it was found at the first sample, as a
    failure of the run rather than of the config)."""
    per_slot = ReplayMemory.slot_bytes_of(4 * math.prod(input_shape), None, config)
    if config.max_bytes is not None:
        if config.capacity and config.max_bytes < per_slot:
            raise MemoryConfigError(
                f"invalid learner config: memory.max_bytes: {config.max_bytes:,} bytes cannot "
                f"hold one sample (at least {per_slot:,} bytes each for inputs of shape "
                f"{tuple(input_shape)}); raise it or leave it out"
            )
        return
    needed = config.capacity * per_slot
    physical = memory_bytes(torch.device("cpu"))  # a memory is held on the CPU
    if physical is not None and needed > physical:
        raise MemoryConfigError(
            f"invalid learner config: memory.capacity: {config.capacity:,} samples of "
            f"{per_slot:,} bytes need {needed / 2**30:,.1f} GiB, more than this machine's "
            f"{physical / 2**30:,.1f} GiB; lower memory.capacity or bound it with "
            "memory.max_bytes"
        )
