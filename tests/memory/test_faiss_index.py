"""The embedding index (memory/faiss_index.py): exactness, in-place overwrites, the switch to
IVF and its retraining, reload to the same neighbours, the GPU copy and the no-faiss path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def held_out_recall(index: EmbeddingIndex, queries: torch.Tensor, k: int = 10) -> float:
    _, found = index.search(queries, k)
    truth = exact(index.vectors[: index.size], queries, k)
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.numel()


def noisy_clusters(n: int, dim: int, seed: int) -> torch.Tensor:
    """Overlapping clusters in a 16-d subspace plus isotropic noise: IVF needs several lists."""
    centres = torch.randn(40, 16, generator=torch.Generator().manual_seed(98)) * 1.5
    g = torch.Generator().manual_seed(seed)
    latent = centres[torch.randint(0, 40, (n,), generator=g)] + torch.randn(n, 16, generator=g)
    projection = torch.randn(16, dim, generator=torch.Generator().manual_seed(99))
    return latent @ projection + 0.5 * torch.randn(n, dim, generator=g)


def test_calibration_picks_the_fewest_lists_that_reach_the_target_recall():
    vectors = noisy_clusters(6000, 32, seed=0)
    index = EmbeddingIndex(capacity=6000, dim=32, kind="ivf", target_recall=0.95)
    index.write(torch.arange(6000), vectors)
    index.search(vectors[:1], 1)
    chosen = index.calibration
    assert chosen is not None and chosen.k == 10 and chosen.queries == 256
    assert chosen.recall >= 0.95 and 1 < chosen.nprobe < index._faiss.nlist
    assert index._faiss.nprobe == chosen.nprobe
    # One list fewer misses the target on the same calibration queries: the smallest is chosen.
    fewer = faiss_index.calibrate_nprobe(
        index._faiss, vectors.numpy(), None, chosen.nprobe - 1, seed=index.trained_on
    )
    assert fewer.recall < 0.95
    # The promise holds for queries the index never stored, too.
    assert held_out_recall(index, noisy_clusters(200, 32, seed=1)) >= 0.93


def test_a_higher_target_scans_more_lists_and_a_fixed_nprobe_is_only_measured():
    vectors = noisy_clusters(4000, 32, seed=2)
    chosen = {}
    for target in (0.8, 0.99):
        index = EmbeddingIndex(capacity=4000, dim=32, kind="ivf", target_recall=target)
        index.write(torch.arange(4000), vectors)
        index.search(vectors[:1], 1)
        chosen[target] = index.calibration
    assert chosen[0.8].nprobe < chosen[0.99].nprobe and chosen[0.99].recall >= 0.99
    fixed = EmbeddingIndex(capacity=4000, dim=32, kind="ivf", nprobe=1)
    fixed.write(torch.arange(4000), vectors)
    fixed.search(vectors[:1], 1)
    assert fixed.calibration.nprobe == 1 and fixed.calibration.recall < chosen[0.8].recall


def test_calibration_is_redone_at_retraining_and_kept_through_a_reload():
    vectors = noisy_clusters(3000, 32, seed=3)
    index = EmbeddingIndex(capacity=3000, dim=32, kind="ivf")
    index.write(torch.arange(3000), vectors)
    index.search(vectors[:1], 1)
    first = index.calibration
    index.write(torch.arange(3000), noisy_clusters(3000, 32, seed=4))  # a whole turnover
    index.search(vectors[:1], 1)
    assert index.calibration is not first and index.calibration.recall >= 0.95
    restored = EmbeddingIndex(capacity=3000, dim=32, kind="ivf")
    restored.load_state_dict(index.state_dict())
    assert restored.calibration.nprobe == index.calibration.nprobe
    queries = noisy_clusters(20, 32, seed=5)
    assert torch.equal(restored.search(queries, 10)[1], index.search(queries, 10)[1])


def test_exact_structures_have_no_calibration():
    index = filled("flat")
    index.search(torch.zeros(1, 8), 1)
    assert index.calibration is None


def test_the_exact_search_of_calibration_is_the_same_in_small_chunks(monkeypatch):
    vectors = noisy_clusters(2000, 32, seed=6)
    picked = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:50].sort().values
    whole = faiss_index._exact_neighbours_of_stored(vectors.numpy(), picked.numpy(), 10)
    monkeypatch.setattr(faiss_index, "EXACT_CHUNK", 300)
    chunked = faiss_index._exact_neighbours_of_stored(vectors.numpy(), picked.numpy(), 10)
    assert (chunked == whole).all()
    others = exact(vectors, vectors[picked], 11)[:, 1:]  # nearest first: itself, then the others
    assert (torch.from_numpy(whole) == others).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "torch"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_embeddings_l2_search_cannot_hold_are_refused_before_any_change(kind, value):
    index = EmbeddingIndex(40, 4, kind)
    index.write(torch.arange(20), torch.randn(20, 4))
    before = index.vectors.clone()
    bad = torch.randn(2, 4)
    bad[1, 2] = value
    with pytest.raises(ValueError, match="memory index write: an embedding is not finite"):
        index.write(torch.tensor([3, 20]), bad)
    assert index.size == 20 and torch.equal(index.vectors, before)
    with pytest.raises(ValueError, match="memory index search"):
        index.search(bad, 3)
    assert index.search(torch.randn(2, 4), 3)[1].shape == (2, 3)


def test_embeddings_at_the_bound_are_indexed_and_retrained_on():
    vectors = torch.randn(200, 8, dtype=torch.float64)
    vectors *= (faiss_index.MAX_SQUARED_NORM**0.5) * 0.999 / vectors.norm(dim=1, keepdim=True)
    index = EmbeddingIndex(300, 8, "ivf")
    index.write(torch.arange(200), vectors.float())
    index.search(vectors[:5].float(), 3)
    index.write(torch.arange(200), -vectors.float())  # a turnover: the next search retrains
    assert index.search(vectors[:5].float(), 3)[1].shape == (5, 3)


def test_a_sample_of_huge_inputs_is_a_learner_error_not_an_abort(tmp_path):
    """Inputs near 1e30 are finite, so a recorded stream passes them (the wire too, with
    messages.max_abs raised), as does a diverging backbone's output; their embeddings' squared
    distances overflow float32, and faiss's k-means threw inside an OpenMP region, which
    aborted the process (a daemon, again at every restart). Run in a child process, which
    must exit cleanly having seen a ValueError."""
    script = tmp_path / "huge.py"
    script.write_text(
        "import torch\n"
        "from learners.base import Problem\n"
        "from learners.registry import create\n"
        "problem = Problem(input_shape=(8,), num_classes=(3,))\n"
        "memory = {'retrieval': 'nearest', 'index': 'ivf', 'approximate_from': 10,"
        " 'capacity': 40}\n"
        "er = create('er', problem, {'memory': memory, 'backbone': {'hidden': [16]}})\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for _ in range(4):\n"
        "    er.learn(torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))\n"
        "try:\n"
        "    for _ in range(4):\n"
        "        er.learn(torch.full((8, 8), 1e30), torch.zeros(8, dtype=torch.long))\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout and "embedding" in done.stdout


def _trained_then_grown() -> EmbeddingIndex:
    """An ivf index calibrated when trained on 190 vectors, then given 10 more (fewer than a
    retraining needs): the vectors a restore holds are not those it was calibrated on."""
    index = EmbeddingIndex(capacity=200, dim=8, kind="ivf")
    vectors = clustered(200, 8, seed=6)
    index.write(torch.arange(190), vectors[:190])
    index.search(vectors[:1], 1)
    index.write(torch.arange(190, 200), vectors[190:])
    index.search(vectors[:1], 1)
    assert index.trained_on == 190 and index.calibration is not None
    return index


def test_a_restored_ivf_index_reports_the_calibration_it_was_saved_with():
    """Before, a restore measured recall again on the vectors held then (e.g. 0.9735 over 200
    queries where the live index reported 0.97526 over 190), so the recall gauge jumped at
    every restart of a daemon that learned nothing new."""
    index = _trained_then_grown()
    restored = EmbeddingIndex(capacity=200, dim=8, kind="ivf")
    restored.load_state_dict(index.state_dict())
    assert restored.calibration == index.calibration
    again = EmbeddingIndex(capacity=200, dim=8, kind="ivf")
    again.load_state_dict(restored.state_dict())
    assert again.calibration == index.calibration


def test_a_checkpoint_without_a_calibration_is_calibrated_again_when_loaded():
    index = _trained_then_grown()
    state = index.state_dict()
    del state.meta["calibration"]  # a checkpoint from before the calibration was saved
    restored = EmbeddingIndex(capacity=200, dim=8, kind="ivf")
    restored.load_state_dict(state)
    assert restored.calibration is not None and restored.calibration.queries > 0
    assert restored.calibration.nprobe == index.calibration.nprobe


@pytest.mark.parametrize(
    "calibration",
    [
        "high",
        {"recall": 1.5, "k": 10, "queries": 190},
        {"recall": float("nan"), "k": 10, "queries": 190},
        {"recall": True, "k": 10, "queries": 190},
        {"recall": 0.9, "k": -1, "queries": 190},
        {"recall": 0.9, "k": 10, "queries": 1.5},
        {"recall": 0.9, "k": 10},
    ],
)
def test_a_checkpointed_calibration_out_of_range_is_refused(calibration):
    state = _trained_then_grown().state_dict()
    state.meta["calibration"] = calibration
    with pytest.raises(ValueError, match=r"calibration|recall|k |queries"):
        EmbeddingIndex(capacity=200, dim=8, kind="ivf").load_state_dict(state)
