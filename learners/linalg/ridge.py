"""Closed-form ridge heads: W = (HᵀH + γI)⁻¹ HᵀY over every row seen, kept exact as rows arrive.

ACIL (Zhuang et al., NeurIPS 2022) and G-ACIL (Zhuang et al., arXiv 2403.15706) fit a linear head
by ridge regression on buffer features H and one-hot labels Y, which gives the weights joint
training on all the data would. The official code keeps R = (HᵀH + γI)⁻¹ and updates R and W per
batch with the Woodbury identity (ACIL eqs. 9-10). :class:`RecursiveRidge` instead keeps the
sufficient statistics G = HᵀH, Q = HᵀY and per-class counts (float64), which a batch updates with
one rank-B product, which two heads merge by addition, and which a checkpoint stores exactly. G is
symmetric, so the head updates and reads only its lower triangle (:mod:`learners.linalg.gram`,
:mod:`learners.linalg.cholesky`); a checkpoint holds the full symmetric G. The solution is solved
lazily:

- :class:`CholeskySolution` factorises G + γI once and keeps W exact while rows arrive by the
  block form of the same Woodbury identity, W = W₀ + V S⁻¹ (Y_U − U W₀) with V = (G₀+γI)⁻¹Uᵀ and
  S = I + UV over the rows U appended since the factorisation, so frequent predictions cost
  O(B·d²) per batch rather than a new O(d³) factorisation. Past ``d/4`` appended rows, or ``d/8``
  rows between two solves, a new factorisation is cheaper and the cache is dropped.
- :class:`WoodburySolution` is the recursive form of the official code, offered as
  ``solver="woodbury"``; it holds R and W only, so it cannot be merged. Where the official
  ``RecursiveLinear`` evaluates ``R @ X.T @ K @ X @ R`` left to right (two d×d products per batch,
  O(d³)), this associates the product as (R Xᵀ)(K⁻¹ X R), O(B·d²), with a Cholesky solve for K⁻¹.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

import torch
from torch import nn

from learners.linalg.cholesky import NotPositiveDefinite, cholesky, cholesky_solve
from learners.linalg.gram import add_gram, symmetric
from learners.state.learner_state import LearnerState

Solver = Literal["lazy", "woodbury"]


def _active_columns(targets: torch.Tensor) -> torch.Tensor:
    """Indices of the target columns that are not all zero (their weights are zero otherwise)."""
    return targets.ne(0).any(dim=0).nonzero().flatten()


class CholeskySolution:
    """The exact ridge solution of fixed statistics (G₀, Q₀), kept exact as rows are appended.

    ``weights()`` returns (G₀ + UᵀU + γI)⁻¹ (Q₀ + UᵀY_U) for the rows U appended so far,
    computed as W₀ + V S⁻¹ E with V = (G₀+γI)⁻¹Uᵀ, S = I + UV and E = Y_U − U W₀. Appended
    rows are processed batch by batch at the next ``weights()`` call and kept in preallocated
    buffers of ``capacity`` rows. Only the lower triangle of G₀ is read.
    """

    def __init__(
        self,
        G: torch.Tensor,
        Q: torch.Tensor,
        gamma: float,
        capacity: int,
        out: torch.Tensor | None = None,
    ) -> None:
        """Factorise G + γI, reading only G's lower triangle; ``out`` (d×d, may be ``G``
        itself) receives the factor, so that a head can reuse one buffer across solves."""
        if out is None:
            out = G.clone()
        elif out is not G:
            out.copy_(G)
        out.diagonal().add_(gamma)
        try:
            factor = cholesky(out, out=out)
        except NotPositiveDefinite as error:
            raise ValueError(
                "ridge statistics are not positive definite "
                "(non-finite features, or gamma too small?)"
            ) from error
        self.factor = factor
        self.W0 = torch.zeros_like(Q)
        columns = _active_columns(Q)
        if len(columns):
            self.W0[:, columns] = cholesky_solve(Q[:, columns], factor)
        self.capacity = capacity
        self.rows = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_rows = 0
        self._weights: torch.Tensor | None = self.W0
        self._U: torch.Tensor | None = None
        self._Vt: torch.Tensor | None = None
        self._E: torch.Tensor | None = None
        self._S: torch.Tensor | None = None

    def room(self, rows: int) -> bool:
        """Whether ``rows`` more rows can be appended more cheaply than re-factorising."""
        total = self.rows + self._pending_rows + rows
        return total <= self.capacity and self._pending_rows + rows <= max(1, self.capacity // 2)

    def append(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        """Rows ``H`` with targets ``Y`` that the statistics gained after the factorisation."""
        if not self.room(len(H)):
            raise ValueError("CholeskySolution is full; factorise the statistics again")
        self._pending.append((H, Y))
        self._pending_rows += len(H)
        self._weights = None

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            for H, Y in self._pending:
                self._absorb(H, Y)
            self._pending.clear()
            self._pending_rows = 0
            self._weights = self._corrected()
        return self._weights

    def _absorb(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        if self._U is None:
            d, c = self.W0.shape
            like = {"dtype": self.W0.dtype, "device": self.W0.device}
            self._U = torch.empty(self.capacity, d, **like)
            self._Vt = torch.empty(self.capacity, d, **like)
            self._E = torch.empty(self.capacity, c, **like)
            self._S = torch.empty(self.capacity, self.capacity, **like)
        assert self._Vt is not None and self._E is not None and self._S is not None
        k, b = self.rows, len(H)
        V = cholesky_solve(H.T, self.factor)  # (G₀+γI)⁻¹ Hᵀ
        self._U[k : k + b] = H
        self._Vt[k : k + b] = V.T
        self._E[k : k + b] = Y - H @ self.W0
        # S = I + U (G₀+γI)⁻¹ Uᵀ is symmetric: compute the new columns, mirror them into rows.
        block = self._U[: k + b] @ V
        block[k : k + b].diagonal().add_(1.0)
        self._S[: k + b, k : k + b] = block
        self._S[k : k + b, :k] = block[:k].T
        self.rows = k + b

    def _corrected(self) -> torch.Tensor:
        if self.rows == 0:
            return self.W0
        assert self._Vt is not None and self._E is not None and self._S is not None
        k = self.rows
        E = self._E[:k]
        columns = _active_columns(E)
        weights = self.W0.clone()
        if len(columns):
            S_factor = torch.linalg.cholesky(self._S[:k, :k])
            Z = cholesky_solve(E[:, columns], S_factor)
            weights[:, columns] += self._Vt[:k].T @ Z
        return weights


class WoodburySolution:
    """The recursive form of ACIL eqs. 9-10: R = (HᵀH + γI)⁻¹ and W, updated per batch.

    With K = I + H R Hᵀ: W ← W + R Hᵀ K⁻¹ (Y − H W), then R ← R − R Hᵀ K⁻¹ H R.
    """

    def __init__(self, R: torch.Tensor, W: torch.Tensor) -> None:
        self.R = R
        self.W = W

    @classmethod
    def fresh(cls, dim: int, outputs: int, gamma: float, device: torch.device) -> WoodburySolution:
        R = torch.eye(dim, dtype=torch.float64, device=device).div_(gamma)
        return cls(R, torch.zeros(dim, outputs, dtype=torch.float64, device=device))

    def room(self, rows: int) -> bool:
        return True

    def append(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        RHt = self.R @ H.T
        K = H @ RHt
        K.diagonal().add_(1.0)
        K_factor = torch.linalg.cholesky(K)
        self.W.addmm_(RHt, cholesky_solve(Y - H @ self.W, K_factor))
        # In place: R − (R Hᵀ)(K⁻¹ H R) as one product would allocate another d×d matrix.
        self.R.addmm_(RHt, cholesky_solve(RHt.T, K_factor), alpha=-1)

    def weights(self) -> torch.Tensor:
        return self.W

    def copy(self) -> WoodburySolution:
        return WoodburySolution(self.R.clone(), self.W.clone())


RidgeSolution = CholeskySolution | WoodburySolution


class RecursiveRidge:
    """One ridge head W = (HᵀH + γI)⁻¹ HᵀY over every row it was fitted on.

    ``solver="lazy"`` keeps G, Q and solves on demand (:class:`CholeskySolution`);
    ``solver="woodbury"`` keeps R, W (:class:`WoodburySolution`). Both keep per-class counts
    of the labelled rows, so a learner knows which classes the head was taught.

    The lazy head keeps G = HᵀH in the lower triangle (diagonal included) of ``_G`` only; the
    strict upper triangle is stale, so everything that reads ``_G`` reads its lower triangle
    (:func:`learners.linalg.cholesky.cholesky`, merging by addition) or goes through :meth:`gram`
    (:func:`learners.linalg.gram.symmetric`).
    The Cholesky factor is written into one d×d buffer reused by every solve.
    """

    def __init__(
        self,
        dim: int,
        outputs: int,
        gamma: float,
        solver: Solver = "lazy",
        device: torch.device | str = "cpu",
    ) -> None:
        self.dim, self.outputs, self.gamma, self.solver = dim, outputs, gamma, solver
        device = torch.device(device)
        self.counts = torch.zeros(outputs, dtype=torch.float64, device=device)
        self._G: torch.Tensor | None = None
        self.Q: torch.Tensor | None = None
        self._factor: torch.Tensor | None = None
        self._solution: RidgeSolution | None = None
        if solver == "lazy":
            self._G = torch.zeros(dim, dim, dtype=torch.float64, device=device)
            self.Q = torch.zeros(dim, outputs, dtype=torch.float64, device=device)
        else:
            self._solution = WoodburySolution.fresh(dim, outputs, gamma, device)

    @property
    def capacity(self) -> int:
        """Rows a :class:`CholeskySolution` absorbs before a new factorisation is cheaper."""
        return max(1, self.dim // 4)

    def fit(self, H: torch.Tensor, Y: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add rows ``H`` [B, d] with targets ``Y`` [B, outputs]; ``labels`` count the classes."""
        if len(H) == 0:
            return
        if labels is not None:
            self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        if self._G is not None and self.Q is not None:
            add_gram(self._G, H)
            self.Q.addmm_(H.T, Y)
            if self._solution is not None and self._solution.room(len(H)):
                self._solution.append(H, Y)
            else:
                self._solution = None
        else:
            assert self._solution is not None
            self._solution.append(H, Y)

    def fit_labels(self, H: torch.Tensor, labels: torch.Tensor) -> None:
        """Add rows ``H`` with one-hot targets for ``labels``."""
        self.fit(H, one_hot(labels, self.outputs), labels)

    def weights(self) -> torch.Tensor:
        """The current solution W [d, outputs] (float64)."""
        if self._solution is None:
            assert self._G is not None and self.Q is not None
            if self._factor is None:
                self._factor = torch.empty_like(self._G)
            # No other solution holds the buffer: the head's previous one was dropped, and
            # ``augmented`` factorises a copy of its own.
            self._solution = CholeskySolution(
                self._G, self.Q, self.gamma, self.capacity, out=self._factor
            )
        return self._solution.weights()

    def gram(self) -> torch.Tensor:
        """G = HᵀH over the rows fitted, as a new full symmetric matrix (lazy heads only)."""
        if self._G is None:
            raise ValueError("a woodbury ridge head keeps no statistics; use solver='lazy'")
        return symmetric(self._G)

    def drop_cache(self) -> None:
        """Forget the lazy solution; it is recomputed from the statistics when next needed."""
        if self.solver == "lazy":
            self._solution = None

    def augmented(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> RidgeSolution:
        """The solution of a temporary copy of this head with extra rows; the head is unchanged."""
        if self._G is not None and self.Q is not None:
            G, Q = self._G.clone(), self.Q.clone()
            for H, Y in batches:
                add_gram(G, H)
                Q.addmm_(H.T, Y)
            return CholeskySolution(G, Q, self.gamma, self.capacity, out=G)
        assert isinstance(self._solution, WoodburySolution)
        solution = self._solution.copy()
        for H, Y in batches:
            solution.append(H, Y)
        return solution

    def merge(self, other: RecursiveRidge) -> None:
        """Add ``other``'s statistics: the head then equals one fitted on both heads' rows."""
        if self.solver != "lazy" or other.solver != "lazy":
            raise ValueError(
                "merging ridge heads needs solver='lazy' (Woodbury keeps no statistics)"
            )
        if (self.dim, self.outputs, self.gamma) != (other.dim, other.outputs, other.gamma):
            raise ValueError("cannot merge ridge heads of different size or gamma")
        assert self._G is not None and self.Q is not None
        assert other._G is not None and other.Q is not None
        self._G += other._G.to(self._G.device)  # lower triangles add; the stale uppers too
        self.Q += other.Q.to(self.Q.device)
        self.counts += other.counts.to(self.counts.device)
        self._solution = None

    def statistics(self) -> list[torch.Tensor]:
        """The live additive statistics G (lower triangle meaningful), Q and counts; after
        changing them in place call :meth:`drop_cache` (lazy heads only)."""
        if self._G is None or self.Q is None:
            raise ValueError("a woodbury ridge head keeps no statistics; use solver='lazy'")
        return [self._G, self.Q, self.counts]

    def state_dict(self) -> LearnerState:
        """The head's statistics: G (full, symmetric), Q, counts (lazy) or R, W, counts
        (woodbury). The lazy solution is a cache, left out."""
        tensors = {"counts": self.counts}
        if self._G is not None and self.Q is not None:
            tensors.update({"G": self.gram(), "Q": self.Q})
        else:
            assert isinstance(self._solution, WoodburySolution)
            tensors.update({"R": self._solution.R, "W": self._solution.W})
        return LearnerState({key: value.detach().cpu() for key, value in tensors.items()})

    def load_state_dict(self, state: LearnerState) -> None:
        device = self.counts.device

        def take(name: str) -> torch.Tensor:
            if name not in state.tensors:
                raise KeyError(
                    f"checkpoint lacks the ridge head's {name} "
                    f"(was it saved with solver={self.solver!r}?)"
                )
            return state.tensors[name].to(device=device, dtype=torch.float64).clone()

        self.counts = take("counts")
        if self.solver == "lazy":
            self._G, self.Q = take("G"), take("Q")
            self._solution = None
        else:
            self._solution = WoodburySolution(take("R"), take("W"))

    def to(self, device: torch.device | str) -> Self:
        device = torch.device(device)
        self.counts = self.counts.to(device)
        if self._G is not None and self.Q is not None:
            self._G, self.Q = self._G.to(device), self.Q.to(device)
            self._factor = self._solution = None
        elif isinstance(self._solution, WoodburySolution):
            self._solution = WoodburySolution(
                self._solution.R.to(device), self._solution.W.to(device)
            )
        return self


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """float64 one-hot targets [B, classes]."""
    return nn.functional.one_hot(labels, classes).to(torch.float64)
