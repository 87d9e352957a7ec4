"""Replay memories: bounded sample stores with insertion policies and retrieval modes.

``build_memory`` is the one constructor learners call, so a learner's ``memory`` config option
decides which memory it gets.
"""

from __future__ import annotations

from memory.class_balanced import ClassBalancedMemory
from memory.config import MemoryConfig
from memory.reservoir import ReservoirMemory

__all__ = ["ClassBalancedMemory", "MemoryConfig", "ReservoirMemory", "build_memory"]


def build_memory(config: MemoryConfig, seed: int) -> ReservoirMemory | ClassBalancedMemory:
    """The memory ``config`` asks for, seeded."""
    if config.policy == "class-balanced":
        return ClassBalancedMemory(config.capacity, seed=seed)
    return ReservoirMemory(config.capacity, seed=seed)
