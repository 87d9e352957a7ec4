"""Per-class feature moments kept exact over a stream: one Chan et al. update for SLDA and AEF-OCL.

Per class ``c`` the count n_c and the mean μ_c of its features, and a second moment: either the
per-class, per-dimension sum of squared deviations M2_c (``second="diagonal"``, AEF-OCL's
variances) or the within-class scatter S_w = Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ pooled over
classes (``second="pooled"``, SLDA's shared covariance S_w / N). A batch, or another instance,
is combined with Chan, Golub and LeVeque's pairwise update (float64): with δ_c = μ_c^b − μ_c^a
and n_c = n_c^a + n_c^b,

    μ_c ← μ_c^a + δ_c n_c^b / n_c,     M2 ← M2^a + M2^b + δ_c δ_cᵀ n_c^a n_c^b / n_c

(only the diagonal of δ_c δ_cᵀ for ``diagonal``), so the moments do not depend on how the
samples were split into batches, and two instances merge into the one that saw both streams.
"""

from __future__ import annotations

from typing import Literal, Self

import torch

from learners.state.learner_state import LearnerState

SecondMoment = Literal["diagonal", "pooled"]


class ClassMoments:
    """Class counts [C], class means [C, d] and a second moment ``m2`` ([C, d] or [d, d])."""

    def __init__(
        self, classes: int, dim: int, second: SecondMoment, device: torch.device | str = "cpu"
    ) -> None:
        where = torch.device(device)
        self.second = second
        self.counts = torch.zeros(classes, dtype=torch.float64, device=where)
        self.mean = torch.zeros(classes, dim, dtype=torch.float64, device=where)
        shape = (classes, dim) if second == "diagonal" else (dim, dim)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=where)

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Absorb a batch of float64 ``features`` [B, d] labelled ``labels`` [B]."""
        counts = torch.zeros_like(self.counts).index_add_(
            0, labels, torch.ones_like(labels, dtype=torch.float64)
        )
        sums = torch.zeros_like(self.mean).index_add_(0, labels, features)
        mean = sums / counts.clamp(min=1).unsqueeze(1)
        centred = features - mean[labels]
        if self.second == "diagonal":
            m2 = torch.zeros_like(self.m2).index_add_(0, labels, centred * centred)
        else:
            m2 = centred.T @ centred
        self._combine(counts, mean, m2)

    def merge(self, other: ClassMoments) -> None:
        """Absorb ``other``'s moments (same classes, dimension and kind of second moment)."""
        if other.second != self.second or other.mean.shape != self.mean.shape:
            raise ValueError("cannot merge class moments of different shapes or kinds")
        device = self.counts.device
        self._combine(other.counts.to(device), other.mean.to(device), other.m2.to(device))

    def _combine(self, counts: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        present = counts > 0
        n_a, n_b = self.counts[present], counts[present]
        n = n_a + n_b
        delta = mean[present] - self.mean[present]
        weight = (n_a * n_b / n).unsqueeze(1)
        if self.second == "diagonal":
            self.m2[present] += m2[present] + delta * delta * weight
        else:
            self.m2 += m2
            self.m2.addmm_(delta.T, delta * weight)
        self.mean[present] += delta * (n_b / n).unsqueeze(1)
        self.counts[present] = n

    def std(self) -> torch.Tensor:
        """Unbiased per-class standard deviation (0 for classes with fewer than two samples)."""
        if self.second != "diagonal":
            raise ValueError("per-class standard deviations need second='diagonal'")
        dof = (self.counts - 1).clamp(min=1).unsqueeze(1)
        return (self.m2 / dof).sqrt()

    def copy(self) -> ClassMoments:
        copy = ClassMoments(0, 0, self.second)
        copy.counts, copy.mean, copy.m2 = self.counts.clone(), self.mean.clone(), self.m2.clone()
        return copy

    def state_dict(self) -> LearnerState:
        return LearnerState(
            {"counts": self.counts.cpu(), "mean": self.mean.cpu(), "m2": self.m2.cpu()}
        )

    def load_state_dict(self, state: LearnerState) -> None:
        device = self.counts.device
        for name in ("counts", "mean", "m2"):
            stored = state.tensors[name]
            if stored.shape != getattr(self, name).shape:
                raise ValueError(
                    f"checkpointed class moments {name} have shape {tuple(stored.shape)}, "
                    f"expected {tuple(getattr(self, name).shape)}"
                )
            setattr(self, name, stored.to(device, torch.float64).clone())

    def to(self, device: torch.device | str) -> Self:
        self.counts, self.mean, self.m2 = (t.to(device) for t in (self.counts, self.mean, self.m2))
        return self
