"""Nearest-neighbour search over a replay memory's embeddings, keyed by memory slot.

:class:`EmbeddingIndex` owns the embeddings ``[capacity, dim]`` (float32, the truth that
checkpoints save) and mirrors the first ``size`` of them in a search structure:

- ``flat`` — ``faiss.IndexFlatL2``, exact. Slots fill ``0, 1, 2, ...`` and never empty again, so
  faiss's row ``i`` is slot ``i`` and an overwritten slot is rewritten in place in faiss's storage.
- ``ivf`` — ``faiss.IndexIVFFlat`` with a hash-table direct map, approximate: a query scans only
  the ``nprobe`` inverted lists nearest to it. Overwriting a slot is a remove and an add by id.
  The coarse quantizer (k-means, :func:`ivf_lists` centroids) is trained on the stored vectors
  and retrained, at the next search, once as many vectors were written since as it was trained
  on: the lists follow the stream's drift and the refreshed embeddings.
- ``torch`` — exact top-k from one matmul, for machines without faiss.

``auto`` is flat (faiss, else torch) below ``approximate_from`` stored vectors and ivf from there.
HNSW is not offered: faiss's HNSW indexes cannot delete, and a full replay memory overwrites a
slot on nearly every insert. With faiss-gpu and a GPU, searches run on a GPU copy of the faiss
index, made again after the index changed; every change is applied to the CPU index, which
supports them all.

Persistence: the vectors and, for ivf, the trained centroids are tensors; loading re-adds the
vectors under the same centroids, so a reloaded index returns the same neighbours. Nothing is
pickled and the faiss index itself is never serialized.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Literal

import numpy as np
import torch

from learners.state.learner_state import LearnerState

try:
    faiss: Any = importlib.import_module("faiss")
except ImportError:  # faiss is an optional extra; exact torch search needs nothing
    faiss = None
else:
    # Exact distances for a batch of 20+ queries as one BLAS matmul, faiss's long-standing
    # default; this faiss-cpu build ships 128000, one pass over the stored vectors per query,
    # several times slower for a batch (docs/performance-notes.md).
    faiss.cvar.distance_compute_blas_threshold = 20

Structure = Literal["flat", "ivf", "torch"]


def faiss_available() -> bool:
    return faiss is not None


def faiss_gpus() -> int:
    """GPUs faiss can search on (0 with faiss-cpu, which has no GPU code)."""
    if faiss is None or not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def ivf_lists(n: int) -> int:
    """Inverted lists for an IVF trained on ``n`` vectors: faiss's 4·√n rule of thumb, capped so
    that k-means has :data:`TRAINING_POINTS_PER_LIST` points per centroid."""
    return max(1, min(round(4 * math.sqrt(n)), n // TRAINING_POINTS_PER_LIST))


# k-means trains on this many points per list (faiss asks for 39 and samples up to 256). The
# memory retrains after every turnover, so training time counts: 16 points train in about half
# the time of 32, and the lists still reach recall@10 >= 0.95 at nprobe 8 (bench/memory.py;
# docs/performance-notes.md).
TRAINING_POINTS_PER_LIST = 16


class EmbeddingIndex:
    """Embeddings of memory slots ``0 .. size-1`` and the structure that searches them."""

    def __init__(
        self,
        capacity: int,
        dim: int,
        kind: Literal["auto", "flat", "ivf", "torch"] = "auto",
        approximate_from: int = 20_000,
        nprobe: int = 16,
    ) -> None:
        if kind in ("flat", "ivf") and faiss is None:
            raise ValueError(f"index {kind!r} needs faiss, which is not installed")
        self.vectors = torch.zeros(capacity, dim, dtype=torch.float32)
        self.size = 0
        self.kind = kind
        self.approximate_from = approximate_from
        self.nprobe = nprobe
        self.structure: Structure = "torch"
        self._faiss: Any = None  # mirrors vectors[:size]; None until the first search builds it
        self.trained_on = 0
        self.written_since_train = 0
        self._gpu_copy: Any = None
        self._gpu_resources: Any = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def wanted_structure(self) -> Structure:
        if self.kind == "torch" or (self.kind == "auto" and faiss is None):
            return "torch"
        if self.kind == "ivf" or (self.kind == "auto" and self.size >= self.approximate_from):
            return "ivf"
        return "flat"

    @property
    def nbytes(self) -> int:
        """Bytes of the vectors plus faiss's copy of them (and an id per vector for ivf)."""
        own = self.vectors.numel() * self.vectors.element_size()
        if self._faiss is None:
            return own
        per_vector = 4 * self.dim + (8 if self.structure == "ivf" else 0)
        return own + int(self._faiss.ntotal) * per_vector

    def write(self, slots: torch.Tensor, vectors: torch.Tensor) -> None:
        """Set the embeddings of ``slots``: existing slots, or new ones that extend ``size``."""
        slots = slots.to(torch.long).cpu()
        vectors = vectors.detach().to("cpu", torch.float32)
        if len(slots) == 0:
            return
        if len(torch.unique(slots)) != len(slots):
            raise ValueError("slots written together must be distinct")
        old = slots < self.size
        new = torch.sort(slots[~old]).values
        if not torch.equal(new, torch.arange(self.size, self.size + len(new))):
            raise ValueError(f"new slots must extend the index from slot {self.size} on")
        self.vectors[slots] = vectors
        if self._faiss is not None and self.structure == "flat":
            if old.any():
                stored = faiss.rev_swig_ptr(self._faiss.get_xb(), self.size * self.dim)
                stored.reshape(self.size, self.dim)[slots[old].numpy()] = vectors[old].numpy()
            if len(new):
                self._faiss.add(self.vectors[new].numpy())
        elif self._faiss is not None and self.structure == "ivf":
            if old.any():
                gone = slots[old].numpy()
                self._faiss.remove_ids(faiss.IDSelectorArray(len(gone), faiss.swig_ptr(gone)))
            self._faiss.add_with_ids(vectors.numpy(), slots.numpy())
        self.size += len(new)
        self.written_since_train += len(slots)
        self._gpu_copy = None

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared L2 distances and slots ``[len(queries), k']`` of each query's ``k' =
        min(k, size)`` nearest stored embeddings, nearest first; slot -1 where an approximate
        search found fewer."""
        k = min(k, self.size)
        q = queries.detach().to("cpu", torch.float32).contiguous()
        if k <= 0 or len(q) == 0:
            return torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.long)
        self._prepare()
        if self.structure == "torch":
            stored = self.vectors[: self.size]
            distances = (q * q).sum(1, keepdim=True) - 2 * q @ stored.T + (stored * stored).sum(1)
            found = distances.clamp_(min=0).topk(k, dim=1, largest=False)
            return found.values, found.indices
        distances, slots = self._searchable().search(q.numpy(), k)
        return torch.from_numpy(distances), torch.from_numpy(slots.astype(np.int64))

    def _prepare(self) -> None:
        wanted = self.wanted_structure()
        stale_lists = wanted == "ivf" and self.written_since_train >= max(self.trained_on, 1)
        if wanted != self.structure or stale_lists or (wanted != "torch" and self._faiss is None):
            self._build(wanted)

    def _build(self, structure: Structure, centroids: torch.Tensor | None = None) -> None:
        self.structure = structure
        self._gpu_copy = None
        self._faiss = None
        stored = self.vectors[: self.size].numpy()
        if structure == "flat":
            self._faiss = faiss.IndexFlatL2(self.dim)
            self._faiss.add(stored)
        elif structure == "ivf":
            quantizer = faiss.IndexFlatL2(self.dim)
            if centroids is None:
                index = faiss.IndexIVFFlat(quantizer, self.dim, ivf_lists(self.size))
                # Below faiss's 39 points per centroid it would warn on stderr at every retrain.
                index.cp.min_points_per_centroid = 1
                index.cp.max_points_per_centroid = TRAINING_POINTS_PER_LIST
                index.train(stored)
                self.trained_on, self.written_since_train = self.size, 0
            else:
                # A quantizer that already holds nlist centroids makes the IVF trained as built.
                quantizer.add(centroids.numpy())
                index = faiss.IndexIVFFlat(quantizer, self.dim, len(centroids))
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.add_with_ids(stored, np.arange(self.size, dtype=np.int64))
            index.nprobe = min(self.nprobe, index.nlist)
            self._faiss = index

    def _searchable(self) -> Any:
        if faiss_gpus() == 0:
            return self._faiss
        if self._gpu_copy is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_copy = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._faiss)
        return self._gpu_copy

    def state_dict(self) -> LearnerState:
        """Tensors and JSON that :meth:`load_state_dict` turns back into this index."""
        tensors = {"vectors": self.vectors[: self.size].clone()}
        if self.structure == "ivf" and self._faiss is not None:
            nlist = self._faiss.nlist
            tensors["centroids"] = torch.from_numpy(self._faiss.quantizer.reconstruct_n(0, nlist))
        meta = {
            "dim": self.dim,
            "structure": self.structure,
            "trained_on": self.trained_on,
            "written_since_train": self.written_since_train,
        }
        return LearnerState(tensors, meta)

    def load_state_dict(self, state: LearnerState) -> None:
        tensors, meta = state.tensors, state.meta
        if int(meta["dim"]) != self.dim:
            raise ValueError(
                f"checkpointed embeddings have dim {meta['dim']}, index has {self.dim}"
            )
        stored = tensors["vectors"]
        self.size = len(stored)
        self.vectors[: self.size] = stored
        self.trained_on = int(meta["trained_on"])
        self.written_since_train = int(meta["written_since_train"])
        self._faiss = None
        self._gpu_copy = None
        # Without faiss here, a checkpoint made with it is searched exactly (same neighbours
        # as flat; ivf's approximate ones may differ).
        self.structure = meta["structure"] if faiss is not None else "torch"
        if "centroids" in tensors and faiss is not None:
            self._build("ivf", centroids=tensors["centroids"])
