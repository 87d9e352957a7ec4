"""Choosing the torch device: ``auto`` takes CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that cannot be used here."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but torch sees no CUDA GPU; use --device auto or cpu"
            )
        return torch.device(name)
    raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda[:N]")
