"""Replay-memory options shared by every learner that replays (``er``, ``uer``, ``pl-fms``).

A learner nests a :class:`MemoryConfig` under its ``memory`` option, so a run picks the memory's
bound, insertion policy, retrieval mode and nearest-neighbour index from its config file::

    {"memory": {"capacity": 2000, "policy": "class_balanced", "retrieval": "nearest"}}
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from learners.config_model import ConfigModel
from memory.faiss_index import faiss_available

Policy = Literal["reservoir", "class_balanced", "clib"]
Retrieval = Literal["uniform", "class_balanced", "nearest", "per_level"]
IndexKind = Literal["auto", "flat", "ivf", "torch"]


class MemoryConfigError(ValueError):
    """A memory option the learner that owns the memory cannot serve; the message names it."""


class MemoryConfig(ConfigModel):
    """How many samples (and bytes) a replay memory holds, which it keeps and which it replays."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    capacity: int = Field(500, ge=0, description="samples held at most")
    max_bytes: int | None = Field(
        None,
        gt=0,
        description="bytes held at most (inputs, labels, embeddings and their index); "
        "null: bounded by capacity only",
    )
    policy: Policy = Field(
        "reservoir",
        description="insertion: reservoir (Vitter's R), class_balanced (evict at random from "
        "the largest class, GDumb), clib (evict the least important sample of the largest class)",
    )
    retrieval: Retrieval = Field(
        "uniform",
        description="replay batches: uniform, class_balanced, nearest (neighbours of the stream "
        "batch's embeddings), per_level (balanced over hierarchy levels)",
    )
    index: IndexKind = Field(
        "auto",
        description="nearest-neighbour index: flat (exact faiss), ivf (approximate faiss), torch "
        "(exact matmul), auto (flat, then ivf from approximate_from stored embeddings)",
    )
    approximate_from: int = Field(
        20_000, gt=0, description="stored embeddings from which index=auto turns approximate (ivf)"
    )
    nprobe: int | None = Field(
        None,
        gt=0,
        description="ivf lists scanned per query; null: the fewest that reach target_recall, "
        "measured at every (re)training of the lists",
    )
    target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@10 against exact search that nprobe=null reaches"
    )
    refresh_chunk: int = Field(
        32,
        ge=0,
        description="stale embeddings re-computed per insert call (the oldest first); 0: never",
    )
    importance_period: int = Field(
        1, gt=0, description="clib: training steps between two loss measurements of the memory"
    )
    importance_decay: float = Field(
        0.9, ge=0, lt=1, description="clib: weight of the old importance in its moving average"
    )

    @field_validator("index")
    @classmethod
    def _faiss_installed(cls, index: IndexKind) -> IndexKind:
        if index in ("flat", "ivf") and not faiss_available():
            raise ValueError(
                f"index {index!r} needs faiss, which is not installed "
                "(pip install 'streamcl[faiss]'); index 'torch' or 'auto' search without it"
            )
        return index
