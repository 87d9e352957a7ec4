"""Replay-memory options shared by every learner that replays (``er``, ``uer``, ``pl-fms``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MemoryConfig(BaseModel):
    """How many samples a replay memory holds and how it chooses them."""

    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(500, ge=0, description="samples held at most")
    policy: Literal["reservoir", "class-balanced"] = Field(
        "reservoir",
        description="insertion policy: reservoir, or class-balanced (evict from the largest class)",
    )
