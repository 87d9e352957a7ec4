"""How much memory the device a learner runs on has, to refuse a config that could never fit.

A replay memory or a ridge head of the configured size is allocated whole (at the first sample,
or when the learner is built); one larger than the machine fails there with an allocator error,
or, with the kernel's overcommit, is killed for memory later, taking a daemon down. Learners
compare what a config asks for with :func:`memory_bytes` when they are built instead.
"""

from __future__ import annotations

import os

import torch


def memory_bytes(device: torch.device) -> int | None:
    """The physical memory of the machine (``cpu``) or of the GPU (``cuda``); None when the
    platform does not tell (nothing is refused then)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AssertionError):
        return None
    return None
