"""Nearest-neighbour search over a replay memory's embeddings, keyed by memory slot.

:class:`EmbeddingIndex` owns the embeddings ``[capacity, dim]`` (float32, the truth that
checkpoints save) and mirrors the first ``size`` of them in a search structure:

- ``flat`` — ``faiss.IndexFlatL2``, exact. Slots fill ``0, 1, 2, ...`` and never empty again, so
  faiss's row ``i`` is slot ``i`` and an overwritten slot is rewritten in place in faiss's storage.
- ``ivf`` — ``faiss.IndexIVFFlat`` with a hash-table direct map, approximate: a query scans only
  the ``nprobe`` inverted lists nearest to it. Overwriting a slot is a remove and an add by id.
  The coarse quantizer (k-means, :func:`ivf_lists` centroids) is trained on the stored vectors
  and retrained, at the next search, once as many vectors were written since as it was trained
  on: the lists follow the stream's drift and the refreshed embeddings. At every (re)training,
  :func:`calibrate_nprobe` measures recall@10 against exact search and, unless ``nprobe`` is
  fixed, scans the fewest lists that reach ``target_recall``; :attr:`EmbeddingIndex.calibration`
  reports the outcome. A checkpoint carries the calibration, so a restored index reports the
  recall measured at training, not one measured on the vectors held at the restore (a
  checkpoint from before it did is calibrated again when loaded).
- ``torch`` — exact top-k from one matmul, for machines without faiss.

``auto`` is flat (faiss, else torch) below ``approximate_from`` stored vectors and ivf from there.
HNSW is not offered: faiss's HNSW indexes cannot delete, and a full replay memory overwrites a
slot on nearly every insert. With faiss-gpu and a GPU, searches run on a GPU copy of the faiss
index, made again after the index changed; every change is applied to the CPU index, which
supports them all.

Embeddings are searched by L2 distance in float32, so every one written, searched for or loaded
must be finite with a squared norm of at most :data:`MAX_SQUARED_NORM`; anything else is refused
with a ``ValueError`` (a learner's error, which the daemon dead-letters and undoes). Beyond it,
squared distances overflow to inf, and faiss's k-means then throws inside an OpenMP region,
which aborts the whole process. Embeddings that large come from inputs near 1e30 (finite, so a
recorded stream's check passes them, as does the wire where ``messages.max_abs`` is raised from
its 1e6) or from a diverging backbone; either took the process down, a daemon again at every
restart.

Persistence: the vectors and, for ivf, the trained centroids are tensors; loading re-adds the
vectors under the same centroids, so a reloaded index returns the same neighbours. Nothing is
pickled and the faiss index itself is never serialized.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
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

MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4
"""The largest squared norm of an embedding: the squared distance of two such vectors,
at most (|a| + |b|)² ≤ 4·max(|a|², |b|²), then stays finite in float32."""


def checked_embeddings(vectors: torch.Tensor, what: str) -> torch.Tensor:
    """``vectors`` ``[n, dim]`` as float32 on the CPU, or a ``ValueError`` naming ``what`` if one
    is not finite or its squared norm exceeds :data:`MAX_SQUARED_NORM` (see the module's doc)."""
    vectors = vectors.detach().to("cpu", torch.float32)
    squared = vectors.double().square().sum(dim=tuple(range(1, vectors.dim())))
    if len(squared) and not bool((squared <= MAX_SQUARED_NORM).all()):  # NaN fails too
        raise ValueError(
            f"{what}: an embedding is not finite, or too large to search by L2 distance in "
            f"float32 (squared norm above {MAX_SQUARED_NORM:.3g})"
        )
    return vectors


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

# Calibration queries: this many stored vectors, recall@CALIBRATION_K of the others. 256 queries
# x 10 neighbours put the recall's standard error near 0.005 at 0.95, and the exact search they
# need (256 x n dot products) costs a small fraction of the k-means it follows.
CALIBRATION_QUERIES = 256
CALIBRATION_K = 10
# Stored rows per block of the exact search: 256 x 32768 float32 distances, 32 MiB at a time.
EXACT_CHUNK = 32_768


@dataclass(frozen=True)
class Calibration:
    """An ivf index's ``nprobe`` and the recall@``k`` measured with it at (re)training."""

    nprobe: int
    recall: float
    k: int
    queries: int


def _exact_neighbours_of_stored(stored: np.ndarray, picked: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest stored rows of each row in ``picked``, itself left out; over chunks of
    :data:`EXACT_CHUNK` rows, so the distance matrix stays small whatever the memory's size."""
    q = torch.from_numpy(stored[picked])
    rows = torch.arange(len(picked))
    best_d = torch.full((len(picked), k), float("inf"))
    best_i = torch.zeros((len(picked), k), dtype=torch.long)
    for start in range(0, len(stored), EXACT_CHUNK):
        part = torch.from_numpy(stored[start : start + EXACT_CHUNK])
        d = (q * q).sum(1, keepdim=True) - 2 * q @ part.T + (part * part).sum(1)
        own = torch.from_numpy((picked >= start) & (picked < start + len(part)))
        d[rows[own], torch.from_numpy(picked)[own] - start] = float("inf")
        found = d.topk(min(k, len(part)), dim=1, largest=False)
        merged_d = torch.cat([best_d, found.values], dim=1)
        merged_i = torch.cat([best_i, found.indices + start], dim=1)
        keep = merged_d.topk(k, dim=1, largest=False).indices
        best_d, best_i = merged_d.gather(1, keep), merged_i.gather(1, keep)
    return best_i.numpy()


def calibrate_nprobe(
    index: Any, stored: np.ndarray, target_recall: float | None, fixed: int | None, seed: int
) -> Calibration:
    """Recall@k of ``index`` on a sample of its own ``stored`` vectors, against exact search.

    Each sampled vector queries the index; its own slot is left out of both answers (a stored
    vector always finds itself, which would flatter the recall by one hit in k). With ``fixed``
    the recall is measured at that ``nprobe``; otherwise the smallest ``nprobe`` whose recall
    reaches ``target_recall``: doubling up from 1, then bisection (recall grows with ``nprobe``:
    the lists scanned are a superset). Scanning every list is exact, so a target is always met.
    """
    n = len(stored)
    k = min(CALIBRATION_K, n - 1)
    if k <= 0:
        return Calibration(nprobe=fixed or 1, recall=1.0, k=0, queries=0)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))
    queries = stored[picked]
    truth = _exact_neighbours_of_stored(stored, picked, k)

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        _, found = index.search(queries, k + 1)
        hits = 0
        for own, row, exact in zip(picked, found, truth, strict=True):
            others = row[(row != own) & (row >= 0)][:k]
            hits += len(np.intersect1d(others, exact))
        return hits / truth.size

    nlist = int(index.nlist)
    if fixed is not None or target_recall is None:
        nprobe = min(fixed or nlist, nlist)
        return Calibration(nprobe, recall_at(nprobe), k, len(picked))
    measured: dict[int, float] = {}
    low, high = 0, 1  # recall(low) < target (0: none scanned), recall(high) to be checked
    while True:
        measured[high] = recall_at(high)
        if measured[high] >= target_recall or high == nlist:
            break
        low, high = high, min(2 * high, nlist)
    while high - low > 1:
        middle = (low + high) // 2
        measured[middle] = recall_at(middle)
        if measured[middle] >= target_recall:
            high = middle
        else:
            low = middle
    index.nprobe = high
    return Calibration(high, measured[high], k, len(picked))


class EmbeddingIndex:
    """Embeddings of memory slots ``0 .. size-1`` and the structure that searches them."""

    def __init__(
        self,
        capacity: int,
        dim: int,
        kind: Literal["auto", "flat", "ivf", "torch"] = "auto",
        approximate_from: int = 20_000,
        nprobe: int | None = None,
        target_recall: float = 0.95,
    ) -> None:
        if kind in ("flat", "ivf") and faiss is None:
            raise ValueError(f"index {kind!r} needs faiss, which is not installed")
        self.vectors = torch.zeros(capacity, dim, dtype=torch.float32)
        self.size = 0
        self.kind = kind
        self.approximate_from = approximate_from
        self.nprobe = nprobe
        self.target_recall = target_recall
        self.calibration: Calibration | None = None  # set whenever an ivf index is (re)built
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
        vectors = checked_embeddings(vectors, "memory index write")
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
        q = checked_embeddings(queries, "memory index search").contiguous()
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

    def _build(
        self,
        structure: Structure,
        centroids: torch.Tensor | None = None,
        nprobe: int | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """Build the search structure; ``calibration``: a checkpoint's (with ``centroids``),
        kept instead of measured again."""
        self.structure = structure
        self.calibration = None
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
            if calibration is None:
                # Seeded by the training size: a reloaded index draws the same queries again.
                calibration = calibrate_nprobe(
                    index, stored, self.target_recall, nprobe or self.nprobe, seed=self.trained_on
                )
            index.nprobe = min(calibration.nprobe, index.nlist)  # as calibrate_nprobe leaves it
            self.calibration = calibration
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
        meta: dict[str, Any] = {
            "dim": self.dim,
            "structure": self.structure,
            "trained_on": self.trained_on,
            "written_since_train": self.written_since_train,
            "nprobe": self.calibration.nprobe if self.calibration is not None else None,
        }
        if self.calibration is not None:
            calibration = self.calibration
            meta["calibration"] = {
                "recall": calibration.recall,
                "k": calibration.k,
                "queries": calibration.queries,
            }
        return LearnerState(tensors, meta)

    def load_state_dict(self, state: LearnerState) -> None:
        tensors, meta = state.tensors, state.meta
        if int(meta["dim"]) != self.dim:
            raise ValueError(
                f"checkpointed embeddings have dim {meta['dim']}, index has {self.dim}"
            )
        stored = checked_embeddings(tensors["vectors"], "checkpointed memory index")
        if stored.dim() != 2 or stored.shape[1] != self.dim or len(stored) > len(self.vectors):
            raise ValueError(
                f"checkpointed memory index holds vectors of shape {tuple(stored.shape)}, this "
                f"index holds up to {len(self.vectors)} of dim {self.dim}"
            )
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
            checked_embeddings(tensors["centroids"], "checkpointed memory index centroids")
            # A calibrated index keeps the nprobe chosen at training: recalibrating on today's
            # vectors could pick another and so other neighbours. A configured nprobe wins.
            chosen = meta.get("nprobe") if self.nprobe is None else self.nprobe
            nprobe = None if chosen is None else max(int(chosen), 1)
            self._build("ivf", tensors["centroids"], nprobe, _saved_calibration(meta, nprobe))


def _saved_calibration(meta: dict[str, Any], nprobe: int | None) -> Calibration | None:
    """The calibration a checkpoint's ``meta`` carries, if it was measured at ``nprobe`` (the
    one the restored index scans); None otherwise, or for a checkpoint from before it was
    saved: the index is then calibrated again. A checkpoint is outside bytes: recall must be
    a finite number in [0, 1], k and queries counts; anything else is refused."""
    saved = meta.get("calibration")
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise ValueError(f"checkpointed memory index calibration is {saved!r}, not a mapping")
    recall, k, queries = saved.get("recall"), saved.get("k"), saved.get("queries")
    if not (
        isinstance(recall, int | float)
        and not isinstance(recall, bool)
        and math.isfinite(recall)
        and 0.0 <= recall <= 1.0
    ):
        raise ValueError(f"checkpointed memory index recall is {recall!r}, not in [0, 1]")
    for name, count in (("k", k), ("queries", queries)):
        if type(count) is not int or count < 0:
            raise ValueError(f"checkpointed memory index {name} is {count!r}, not a count")
    saved_nprobe = meta.get("nprobe")
    if nprobe is None or saved_nprobe is None or int(saved_nprobe) != nprobe:
        return None  # measured at another nprobe than the one scanned now
    assert type(k) is int and type(queries) is int
    return Calibration(nprobe=nprobe, recall=float(recall), k=k, queries=queries)
