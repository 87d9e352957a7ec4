"""The embedding index (memory/faiss_index.py): exactness, in-place overwrites, the switch to
IVF and its retraining, reload to the same neighbours, the GPU copy and the no-faiss path."""

from __future__ import annotations

import faiss
import pytest
import torch

from memory import faiss_index
from memory.faiss_index import EmbeddingIndex, ivf_lists


def clustered(n: int, dim: int, seed: int, clusters: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 4
    return centres[torch.randint(0, clusters, (n,), generator=g)] + torch.randn(n, dim, generator=g)


def exact(vectors: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cdist(queries, vectors).topk(k, largest=False).indices


def filled(kind: str, n: int = 300, dim: int = 8, **options) -> EmbeddingIndex:
    index = EmbeddingIndex(capacity=n, dim=dim, kind=kind, **options)
    index.write(torch.arange(n), clustered(n, dim, seed=0))
    return index


@pytest.mark.parametrize("kind", ["flat", "torch"])
def test_exact_kinds_find_the_exact_neighbours_after_overwrites(kind):
    index = filled(kind)
    index.search(torch.zeros(1, 8), 1)  # build the structure, so overwrites go in place
    overwrite = torch.tensor([7, 150, 3])
    index.write(overwrite, clustered(3, 8, seed=1))
    index.write(torch.tensor([299, 0]), clustered(2, 8, seed=2))
    queries = clustered(16, 8, seed=3)
    distances, slots = index.search(queries, 10)
    assert torch.equal(slots, exact(index.vectors, queries, 10))
    expected = ((queries[:, None] - index.vectors[slots]) ** 2).sum(-1)
    assert torch.allclose(distances, expected, atol=1e-3)


def test_ivf_scanning_every_list_is_exact_and_few_lists_keep_recall():
    index = filled("ivf", n=2000, nprobe=10_000)
    queries = clustered(32, 8, seed=4)
    _, slots = index.search(queries, 10)
    assert torch.equal(slots, exact(index.vectors, queries, 10))
    probed = filled("ivf", n=2000, nprobe=8)
    _, approximate = probed.search(queries, 10)
    truth = exact(probed.vectors, queries, 10)
    recall = sum(
        len(set(a.tolist()) & set(t.tolist())) for a, t in zip(approximate, truth, strict=True)
    )
    assert recall / truth.numel() >= 0.9


def test_ivf_overwrites_replace_the_old_vector():
    index = filled("ivf", n=500)
    index.search(torch.zeros(1, 8), 1)
    far = torch.full((1, 8), 100.0)
    index.write(torch.tensor([42]), far)
    _, slots = index.search(far, 1)
    assert slots.item() == 42
    assert index._faiss.ntotal == 500  # removed, then added: no duplicate of slot 42


def test_new_slots_must_extend_the_index_and_be_distinct():
    index = EmbeddingIndex(capacity=10, dim=2, kind="flat")
    with pytest.raises(ValueError, match="from slot 0 on"):
        index.write(torch.tensor([1]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="distinct"):
        index.write(torch.tensor([0, 0]), torch.zeros(2, 2))


def test_auto_turns_approximate_at_the_threshold_and_retrains_after_a_turnover():
    index = EmbeddingIndex(capacity=400, dim=8, kind="auto", approximate_from=200)
    index.write(torch.arange(199), clustered(199, 8, seed=5))
    index.search(torch.zeros(1, 8), 1)
    assert index.structure == "flat"
    index.write(torch.arange(199, 400), clustered(201, 8, seed=6))
    index.search(torch.zeros(1, 8), 1)
    assert index.structure == "ivf" and index.trained_on == 400
    assert index._faiss.nlist == ivf_lists(400) == 25
    index.write(torch.arange(399), clustered(399, 8, seed=7))
    index.search(torch.zeros(1, 8), 1)
    assert index.written_since_train == 399  # not yet a full turnover
    index.write(torch.tensor([5]), clustered(1, 8, seed=8))
    index.search(torch.zeros(1, 8), 1)
    assert index.written_since_train == 0 and index.trained_on == 400


def test_reloaded_ivf_returns_the_same_neighbours_without_retraining():
    index = filled("ivf", n=3000, nprobe=2)
    index.search(torch.zeros(1, 8), 1)
    index.write(torch.arange(0, 3000, 7), clustered(429, 8, seed=9))  # drift after training
    state = index.state_dict()
    assert state.tensors.keys() == {"vectors", "centroids"}
    restored = EmbeddingIndex(capacity=3000, dim=8, kind="ivf", nprobe=2)
    restored.load_state_dict(state)
    queries = clustered(32, 8, seed=10)
    original_d, original_s = index.search(queries, 10)
    restored_d, restored_s = restored.search(queries, 10)
    assert torch.equal(original_s, restored_s) and torch.equal(original_d, restored_d)
    assert restored.trained_on == index.trained_on  # same centroids, no k-means on load


def test_a_gpu_copy_is_searched_and_made_again_after_changes(monkeypatch):
    copies = []

    def to_gpu(resources, device, index):
        copies.append(device)
        return faiss.clone_index(index)  # a CPU stand-in for the GPU index

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    index = filled("ivf", n=500, nprobe=100)
    queries = clustered(4, 8, seed=11)
    first = index.search(queries, 5)[1]
    index.search(queries, 5)
    assert len(copies) == 1
    index.write(torch.tensor([3]), queries[:1])  # slot 3 becomes query 0's nearest
    second = index.search(queries, 5)[1]
    assert len(copies) == 2
    assert first[0, 0] != 3 and second[0, 0] == 3
    assert torch.equal(second, exact(index.vectors, queries, 5))


def test_without_faiss_auto_searches_exactly_and_faiss_kinds_are_refused(monkeypatch):
    from memory.config import MemoryConfig

    monkeypatch.setattr(faiss_index, "faiss", None)
    index = filled("auto", n=300, approximate_from=10)
    queries = clustered(8, 8, seed=13)
    assert torch.equal(index.search(queries, 5)[1], exact(index.vectors, queries, 5))
    assert index.structure == "torch"
    with pytest.raises(ValueError, match="index 'ivf' needs faiss"):
        MemoryConfig(index="ivf")
