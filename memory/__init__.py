"""Replay memories: bounded sample stores with insertion policies, retrieval modes and a
nearest-neighbour index of sample embeddings (FAISS, or exact torch search without it).

``build_memory`` is the one constructor learners call, so a learner's ``memory`` config option
decides which memory it gets; the learner adds what the config may need, an ``embed`` and a
per-sample ``loss`` function (see :mod:`memory.replay_memory`).
"""

from __future__ import annotations

from memory.config import MemoryConfig, MemoryConfigError
from memory.replay_memory import Embed, ReplayBatch, ReplayMemory, SampleLoss

__all__ = ["MemoryConfig", "MemoryConfigError", "ReplayBatch", "ReplayMemory", "build_memory"]


def build_memory(
    config: MemoryConfig,
    seed: int,
    embed: Embed | None = None,
    loss: SampleLoss | None = None,
) -> ReplayMemory:
    """The memory ``config`` asks for, seeded; a config option the learner cannot serve (it gives
    no ``embed`` or ``loss`` function) is a :class:`MemoryConfigError`."""
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
