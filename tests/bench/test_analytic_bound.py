"""The bound head of bench/analytic.py keeps the statistics auto keeps, and predicts as woodbury."""

from __future__ import annotations

import torch

from bench.analytic import GAMMA, WoodburyKeepingStatistics
from learners.linalg.ridge import GRAM_ROWS, RecursiveRidge


def test_the_bound_head_keeps_g_and_q_and_the_woodbury_weights():
    g = torch.Generator().manual_seed(0)
    H = torch.rand(GRAM_ROWS + 77, 12, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (len(H),), generator=g)
    bound = WoodburyKeepingStatistics(12, 5, GAMMA)
    woodbury = RecursiveRidge(12, 5, GAMMA, "woodbury")
    for start, end in ((0, 16), (16, 200), (200, GRAM_ROWS + 77)):  # across a Gram block
        bound.fit_labels(H[start:end], labels[start:end])
        woodbury.fit_labels(H[start:end], labels[start:end])
    assert len(bound.statistics.waiting) == 77  # the Gram update is deferred as auto's is
    torch.testing.assert_close(bound.statistics.gram(), H.T @ H, rtol=1e-12, atol=1e-12)
    assert bound.statistics.Q is not None
    torch.testing.assert_close(bound.statistics.Q, H.T @ torch.eye(5, dtype=torch.float64)[labels])
    assert torch.equal(bound.weights(), woodbury.weights())
