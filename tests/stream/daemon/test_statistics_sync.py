"""Learners with synced statistics on several ranks (threads here) are one model at every sync
point, and after a whole stream equal one learner that learned every sample (to 1e-9)."""

from __future__ import annotations

import pytest
import torch

from learners import registry
from learners.base import Problem
from learners.capabilities import AdditiveStatistics, MomentStatistics
from stream.daemon.statistics_sync import StatisticsSync
from tests.support.threaded_ranks import ThreadedCollectives, ThreadedGroup

PROBLEM = Problem(input_shape=(8,), num_classes=(4,))
OPTIONS = {
    "acil": {"buffer_size": 32},
    "nmc": {},
    "ds-al": {"buffer_size": 32},
    "slda": {},
    "aef-ocl": {"buffer_size": 32},
}


def stream(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def scaled_out(name: str, ranks: int, x: torch.Tensor, y: torch.Tensor, rounds: int) -> list:
    """Each rank learns every ``ranks``-th sample, in ``rounds`` rounds with a sync after each;
    a rank may have nothing in a round (uneven partitions)."""
    group = ThreadedGroup(ranks)

    def work(rank: int):
        learner = registry.create(name, PROBLEM, OPTIONS[name])
        sync = StatisticsSync(learner, ThreadedCollectives(group, rank))
        mine_x, mine_y = x[rank::ranks], y[rank::ranks]
        if rank == ranks - 1:  # the last rank's partition is empty
            mine_x, mine_y = mine_x[:0], mine_y[:0]
        for part in range(rounds):
            rows = slice(part * len(mine_y) // rounds, (part + 1) * len(mine_y) // rounds)
            if len(mine_y[rows]):
                learner.learn(mine_x[rows], mine_y[rows], torch.zeros_like(mine_y[rows]))
            sync.synchronize()
        return learner

    return group.run(work)


def learned_by_all(ranks: int, y: torch.Tensor) -> torch.Tensor:
    """The samples some rank learned (all but the empty last rank's)."""
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[ranks - 1 :: ranks] = False
    return keep


def statistics(learner) -> list[torch.Tensor]:
    """Every synced statistics tensor of ``learner``."""
    tensors = []
    if isinstance(learner, AdditiveStatistics):
        tensors += learner.additive_statistics()
    if isinstance(learner, MomentStatistics):
        tensors += [t for m in learner.moment_statistics() for t in (m.counts, m.means, m.second)]
    return tensors


@pytest.mark.parametrize("name", ["acil", "nmc", "slda", "aef-ocl"])
def test_ranks_synced_after_a_stream_equal_one_learner_on_all_samples(name):
    x, y = stream(300)
    learners = scaled_out(name, 3, x, y, rounds=4)
    keep = learned_by_all(3, y)
    alone = registry.create(name, PROBLEM, OPTIONS[name])
    alone.learn(x[keep], y[keep], torch.zeros(int(keep.sum()), dtype=torch.long))
    for learner in learners:
        for mine, single in zip(statistics(learner), statistics(alone), strict=True):
            torch.testing.assert_close(mine, single, rtol=1e-9, atol=1e-9)
        if name != "aef-ocl":  # its pseudo-feature draws are per rank
            torch.testing.assert_close(learner.predict(x), alone.predict(x), rtol=1e-6, atol=1e-6)
    for other in learners[1:]:  # one model: the same bits on every rank
        for a, b in zip(statistics(learners[0]), statistics(other), strict=True):
            assert torch.equal(a, b)


def test_ds_al_main_stream_is_exact_across_ranks():
    x, y = stream(200, seed=1)
    learners = scaled_out("ds-al", 2, x, y, rounds=3)
    keep = learned_by_all(2, y)
    alone = registry.create("ds-al", PROBLEM, OPTIONS["ds-al"])
    alone.learn(x[keep], y[keep], torch.zeros(int(keep.sum()), dtype=torch.long))
    for learner in learners:
        torch.testing.assert_close(
            learner.main[0].weights(), alone.main[0].weights(), rtol=1e-9, atol=1e-9
        )


def test_a_learner_without_synced_statistics_is_refused():
    learner = registry.create("er", PROBLEM, {})
    with pytest.raises(TypeError, match="no statistics"):
        StatisticsSync(learner, ThreadedCollectives(ThreadedGroup(1), 0))


def test_a_woodbury_head_has_no_statistics_to_sync():
    learner = registry.create("acil", PROBLEM, {"buffer_size": 16, "solver": "woodbury"})
    with pytest.raises(ValueError, match="woodbury"):
        StatisticsSync(learner, ThreadedCollectives(ThreadedGroup(1), 0))
