"""Retrieval modes (memory/retrieval.py), alone and through the memory's ``sample_batch``."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from memory import MemoryConfig, ReplayMemory
from memory.faiss_index import EmbeddingIndex
from memory.retrieval import balanced, balanced_quotas, nearest, uniform


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_uniform_draws_distinct_slots_of_the_stored_ones():
    slots = uniform(10, 7, generator())
    assert len(set(slots.tolist())) == 7 and slots.max() < 10
    assert sorted(uniform(10, 50, generator()).tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("counts", "n"), [([5, 5, 5], 7), ([1, 9, 9, 2], 12), ([3, 100], 50), ([4, 4], 20)]
)
def test_balanced_quotas_are_equal_within_one_unless_a_group_runs_out(counts, n):
    counts_t = torch.tensor(counts)
    quota = balanced_quotas(counts_t, n, generator())
    assert int(quota.sum()) == min(n, sum(counts))
    assert (quota <= counts_t).all()
    open_groups = quota < counts_t  # groups that could have given more
    if open_groups.any():
        assert quota.max() - quota[open_groups].min() <= 1
        assert (quota[~open_groups] <= quota[open_groups].min() + 1).all()


def test_balanced_draws_each_group_equally_and_distinct_slots():
    groups = torch.tensor([0] * 50 + [1] * 5 + [2] * 20)
    slots = balanced(groups, 12, generator())
    assert len(set(slots.tolist())) == 12
    assert sorted(Counter(groups[slots].tolist()).values()) == [4, 4, 4]
    # Group 1 has 5 samples; asking for 30 takes all 5 and splits the rest.
    slots = balanced(groups, 30, generator(1))
    assert Counter(groups[slots].tolist()) == {0: 13, 1: 5, 2: 12} or Counter(
        groups[slots].tolist()
    ) == {0: 12, 1: 5, 2: 13}


def test_nearest_takes_every_query_s_neighbours_rank_by_rank():
    index = EmbeddingIndex(capacity=6, dim=1, kind="torch")
    index.write(torch.arange(6), torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]]))
    queries = torch.tensor([[0.1], [11.9]])
    # Ranks: query 0 -> 0, 1, 2, ...; query 1 -> 5, 4, 3, ...; interleaved: 0, 5, 1, 4, ...
    assert nearest(index, queries, 4, generator()).tolist() == [0, 5, 1, 4]
    # Repeats are skipped: two identical queries give one query's neighbours.
    assert nearest(index, torch.tensor([[0.0], [0.0]]), 3, generator()).tolist() == [0, 1, 2]


def test_nearest_tops_up_when_an_approximate_index_finds_too_few():
    class SparseIndex:
        size = 10

        def search(self, queries, k):
            found = torch.full((len(queries), k), -1)
            found[:, 0] = 3
            return torch.zeros(len(queries), k), found

    slots = nearest(SparseIndex(), torch.zeros(2, 4), 5, generator())  # type: ignore[arg-type]
    assert slots[0] == 3 and len(set(slots.tolist())) == 5


def embed_first_two(x: torch.Tensor) -> torch.Tensor:
    return x[:, :2]


def filled_memory(retrieval: str) -> ReplayMemory:
    memory = ReplayMemory(
        MemoryConfig(capacity=60, retrieval=retrieval, index="torch"),
        seed=0,
        embed=embed_first_two,
    )
    y = torch.arange(60) % 3
    level = (torch.arange(60) < 10).long()  # 10 samples on level 1, 50 on level 0
    x = torch.cat([y[:, None].float() * 10, torch.randn(60, 3, generator=generator())], 1)
    memory.add(x, y, level)
    return memory


def test_memory_class_balanced_retrieval():
    memory = filled_memory("class_balanced")
    batch = memory.sample_batch(12)
    keys = Counter(zip(batch.level.tolist(), batch.y.tolist(), strict=True))
    assert len(keys) == 6 and set(keys.values()) == {2}  # 3 labels x 2 levels, 2 each


def test_memory_per_level_retrieval():
    batch = filled_memory("per_level").sample_batch(16)
    assert Counter(batch.level.tolist()) == {0: 8, 1: 8}


def test_memory_nearest_retrieval_returns_the_query_s_neighbours():
    memory = filled_memory("nearest")
    query = torch.tensor([[20.0, 0.0, 0.0, 0.0, 0.0]])  # embeds next to the label-2 samples
    batch = memory.sample_batch(10, query=query)
    assert (batch.y == 2).all()
    exact = ((memory.x[:60, :2] - query[:, :2]) ** 2).sum(1).argsort()[:10]
    assert set(batch.slots.tolist()) == set(exact.tolist())
    with pytest.raises(ValueError, match="needs the stream batch"):
        memory.sample_batch(10)


def test_memory_uniform_retrieval_reports_where_and_when_samples_came():
    memory = filled_memory("uniform")
    batch = memory.sample_batch(5)
    assert torch.equal(batch.arrival, batch.slots)  # filled in order, nothing replaced yet
    assert torch.equal(batch.ids, batch.arrival)
