"""Closed-form ridge heads: W = (HᵀH + γI)⁻¹ HᵀY over every row seen, kept exact as rows arrive.

ACIL (Zhuang et al., NeurIPS 2022) and G-ACIL (Zhuang et al., arXiv 2403.15706) fit a linear head
by ridge regression on buffer features H and one-hot labels Y, which gives the weights joint
training on all the data would. The official code keeps R = (HᵀH + γI)⁻¹ and updates R and W per
batch with the Woodbury identity (ACIL eqs. 9-10). :class:`RecursiveRidge` instead keeps the
sufficient statistics G = HᵀH, Q = HᵀY and per-class counts (float64), which a batch updates with
one rank-B product, which two heads merge by addition, and which a checkpoint stores exactly. G is
symmetric, so the head updates and reads only its lower triangle (:mod:`learners.linalg.gram`,
:mod:`learners.linalg.cholesky`); a checkpoint holds the Gram products applied so far (full and
symmetric) and the rows whose Gram update is deferred. The solution is a cache, rebuilt from the
statistics whenever it is dropped (a merge, a device move); a checkpoint carries it
(:func:`solution_state`), so that a restored head goes on bit for bit:

- :class:`CholeskySolution` factorises G + γI once and keeps W exact while rows arrive by the
  block form of the same Woodbury identity, W = W₀ + V S⁻¹ (Y_U − U W₀) with V = (G₀+γI)⁻¹Uᵀ and
  S = I + UV over the rows U appended since the factorisation, so frequent predictions cost
  O(B·d²) per batch rather than a new O(d³) factorisation. Past ``d/4`` appended rows, or ``d/8``
  rows between two solves, a new factorisation is cheaper and the cache is dropped.
- :class:`WoodburySolution` is the recursive form of the official code, offered as
  ``solver="woodbury"``; it holds R and W only, so it cannot be merged. Where the official
  ``RecursiveLinear`` evaluates ``R @ X.T @ K @ X @ R`` left to right (two d×d products per batch,
  O(d³)), this associates the product as (R Xᵀ)(K⁻¹ X R), O(B·d²), with a Cholesky solve for K⁻¹.
- :class:`InverseSolution` keeps R = (G+γI)⁻¹ explicitly and the current W, updated per
  batch by the recursive form with one product R₀Hᵀ (one read of R₀), R itself left implicit
  over the rows absorbed since the last fold; every ``capacity`` rows it folds them into R₀ by
  one rank-``capacity`` product, and the head recomputes R₀ from the statistics every
  ``refresh`` rows, so rounding cannot accumulate. This is the form for frequent predictions
  (every micro-batch: prequential accuracy, the daemon).

``solver="auto"`` (the default) keeps the statistics as ``lazy`` does and picks the solution by
the prediction cadence (:class:`Cadence`): :class:`InverseSolution` while predictions come
every few rows, :class:`CholeskySolution` while they are rare. Either way the Gram update of
the statistics is deferred to blocks of :data:`GRAM_ROWS` rows (one rank-256 product instead
of sixteen rank-16 ones, which run far below a matrix product's speed); solves read G plus the
waiting rows. See docs/analytic.md for the cost of each path against the floor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

import torch
from torch import nn

from learners.linalg.cholesky import NotPositiveDefinite, cholesky, cholesky_solve, one_thread
from learners.linalg.gram import add_gram, symmetric
from learners.state.learner_state import LearnerState

Solver = Literal["auto", "lazy", "woodbury"]

GRAM_ROWS = 256
"""Rows whose Gram update a head defers and applies as one product (see the module docstring)."""

FOLD_ROWS = 128
"""Rows an :class:`InverseSolution` absorbs before folding them into R: each batch costs
O(d·rows·b) more per row absorbed, while a rank-128 update of R runs near the speed of a
large matrix product (a rank-16 one, per batch, runs at a fraction of that speed)."""


def _active_columns(targets: torch.Tensor) -> torch.Tensor:
    """Indices of the target columns that are not all zero (their weights are zero otherwise)."""
    return targets.ne(0).any(dim=0).nonzero().flatten()


def _factorise(G: torch.Tensor, gamma: float, out: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of G + γI (G's lower triangle) written into ``out`` (may be G)."""
    if out is not G:
        out.copy_(G)
    out.diagonal().add_(gamma)
    try:
        return cholesky(out, out=out)
    except NotPositiveDefinite as error:
        raise RidgeBreakdown(_NOT_POSITIVE_DEFINITE) from error


class RidgeBreakdown(ValueError):
    """The regularised statistics lost positive definiteness in floating point: gamma is too
    small for the scale of these features (or a feature is not finite). A user's config
    error (the CLI's exit 2); the head is left as it was before the batch that met it."""


_NOT_POSITIVE_DEFINITE = (
    "ridge statistics are not positive definite: the learner's gamma is too small for the "
    "scale of these features (or a feature is not finite); raise gamma"
)


def _factor(matrix: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor of a small positive definite ``matrix``, or ``RidgeBreakdown``
    (torch's own error named its internals)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) or not bool(factor.diagonal().isfinite().all()):
        raise RidgeBreakdown(_NOT_POSITIVE_DEFINITE)
    return factor


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
        factor = _factorise(G, gamma, G.clone() if out is None else out)
        W0 = torch.zeros_like(Q)
        columns = _active_columns(Q)
        if len(columns):
            W0[:, columns] = cholesky_solve(Q[:, columns], factor)
        self._begin(factor, W0, capacity)

    @classmethod
    def restored(cls, factor: torch.Tensor, W0: torch.Tensor, capacity: int) -> CholeskySolution:
        """The solution of a factor and weights computed before (a checkpoint's): nothing is
        factorised; rows absorbed or waiting since are set by the caller."""
        solution = cls.__new__(cls)
        solution._begin(factor, W0, capacity)
        solution._weights = None
        return solution

    def _begin(self, factor: torch.Tensor, W0: torch.Tensor, capacity: int) -> None:
        self.factor = factor
        self.W0 = W0
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

    def _allocate(self) -> None:
        """The buffers of ``capacity`` rows the absorbed rows go into."""
        d, c = self.W0.shape
        dtype, device = self.W0.dtype, self.W0.device
        self._U = torch.empty(self.capacity, d, dtype=dtype, device=device)
        self._Vt = torch.empty(self.capacity, d, dtype=dtype, device=device)
        self._E = torch.empty(self.capacity, c, dtype=dtype, device=device)
        self._S = torch.empty(self.capacity, self.capacity, dtype=dtype, device=device)

    def _absorb(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        if self._U is None:
            self._allocate()
        assert self._U is not None and self._Vt is not None
        assert self._E is not None and self._S is not None
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
            S_factor = _factor(self._S[:k, :k])
            Z = cholesky_solve(E[:, columns], S_factor)
            weights[:, columns] += self._Vt[:k].T @ Z
        return weights


class InverseSolution:
    """The exact ridge solution with R = (G+γI)⁻¹ kept explicitly, for frequent solves.

    W is kept current batch by batch by the recursive form of ACIL eqs. 9-10: for a batch H of b
    rows, P = R Hᵀ, K = I + H P, W ← W + P K⁻¹ (Y − H W) and R ← R − P K⁻¹ Pᵀ. R is held as
    R₀ − ZᵀZ: the rank-b downdate of each batch is not applied to R₀ but appended to Z as the b
    rows L_K⁻¹ Pᵀ (L_K the Cholesky factor of K), so a batch reads R₀ once, for A = R₀Hᵀ, and
    P = A − Zᵀ(Z Hᵀ) costs O(k·d·b) over the k rows of Z. Past ``capacity`` rows, Z is folded
    into R₀ by one rank-k product, R₀ ← R₀ − ZᵀZ: the d×d work of several rank-b updates done
    as one product, which runs near the speed of a large matrix product where rank-16 ones do
    not. ``folded`` counts the rows folded since R₀ was computed from statistics, so that the
    head can recompute it before rounding accumulates.

    R₀ is kept whole (not as a lower triangle like G): a product with half of it, block by
    block, was no faster on two cores, and its many small products each wait out the time
    slice of a preempted thread on a busy machine (see :func:`learners.linalg.cholesky.one_thread`),
    where one product per batch does not.
    """

    def __init__(self, R: torch.Tensor, W: torch.Tensor, capacity: int = FOLD_ROWS) -> None:
        self.R, self.W = R, W
        self.capacity = capacity
        self.folded = 0
        self.rows = 0
        self._Z = torch.empty(capacity, W.shape[0], dtype=W.dtype, device=W.device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_rows = 0

    @classmethod
    def of_statistics(
        cls, G: torch.Tensor, Q: torch.Tensor, gamma: float, capacity: int = FOLD_ROWS
    ) -> InverseSolution:
        """R = (G+γI)⁻¹ and W = R Q from G's lower triangle; G is overwritten (by the factor)."""
        factor = _factorise(G, gamma, G)
        W = torch.zeros_like(Q)
        columns = _active_columns(Q)
        if len(columns):
            W[:, columns] = cholesky_solve(Q[:, columns], factor)
        # cholesky_inverse returns a column-major matrix, with which R₀Hᵀ runs at half the
        # speed of a row-major one (docs/performance-notes.md); R₀ is symmetric, so its
        # transposed view is the same matrix in row-major order.
        return cls(torch.cholesky_inverse(factor).mT, W, capacity)

    def room(self, rows: int) -> bool:
        """Whether ``rows`` more rows may wait for the next solve: a few folds' worth, so that
        a solution nobody solves (a head whose learner predicts from a copy, as AEF-OCL does)
        is dropped instead of holding every row."""
        return self._pending_rows + rows <= 4 * self.capacity

    def append(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        if not self.room(len(H)):
            raise ValueError("InverseSolution has too many rows waiting; solve it first")
        self._pending.append((H, Y))
        self._pending_rows += len(H)

    def weights(self) -> torch.Tensor:
        for H, Y in self._pending:
            for start in range(0, len(H), self.capacity):
                self._absorb(H[start : start + self.capacity], Y[start : start + self.capacity])
        self._pending.clear()
        self._pending_rows = 0
        return self.W

    def _absorb(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        if self.rows + len(H) > self.capacity:
            self._fold()
        A = self.R @ H.T  # R₀Hᵀ [d, b]: R₀ is symmetric, and this order runs faster than H R₀
        with one_thread(A):
            self._update(H, Y, A)

    def _update(self, H: torch.Tensor, Y: torch.Tensor, A: torch.Tensor) -> None:
        """Everything after the product with R₀: small, so on one thread (see ``one_thread``)."""
        k, b = self.rows, len(H)
        P = A
        if k:
            Z = self._Z[:k]
            P = A - Z.T @ (Z @ H.T)  # R Hᵀ = (R₀ − ZᵀZ) Hᵀ
        K = H @ P
        K.diagonal().add_(1.0)
        K_factor = _factor(K)
        self.W.addmm_(P, cholesky_solve(Y - H @ self.W, K_factor))
        # R − P K⁻¹ Pᵀ = R₀ − ZᵀZ − (L_K⁻¹Pᵀ)ᵀ(L_K⁻¹Pᵀ): the new rows of Z
        torch.linalg.solve_triangular(K_factor, P.T, upper=False, out=self._Z[k : k + b])
        self.rows = k + b

    def _fold(self) -> None:
        k = self.rows
        if k == 0:
            return
        Z = self._Z[:k]
        self.R.addmm_(Z.T, Z, alpha=-1.0)
        self.folded += k
        self.rows = 0


class Cadence:
    """How often a head is solved, to choose between the lazy and the inverse solution.

    Counts the rows learned between two solves; solves with nothing learned in between (the
    chunks of one evaluation set) do not count. Predictions become *rare* at the first solve
    that comes more than ``threshold`` rows after the previous one (dropping R costs nothing),
    and *frequent* again only once two solves in a row came at most ``threshold`` rows apart
    (building R costs a factorisation and an inverse, O(d³)).
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.frequent = True  # the engine predicts every batch: expect that until shown otherwise
        self.rows = 0
        self._streak = 0

    def learned(self, rows: int) -> None:
        self.rows += rows

    def solved(self) -> bool:
        """Record a solve; whether it switched the cadence."""
        if self.rows == 0:
            return False
        frequent, self.rows = self.rows <= self.threshold, 0
        if frequent == self.frequent:
            self._streak = 0
            return False
        self._streak += 1
        if frequent and self._streak < 2:
            return False
        self.frequent, self._streak = frequent, 0
        return True

    def reset(self) -> None:
        self.frequent, self.rows, self._streak = True, 0, 0

    def state(self) -> dict[str, object]:
        """What a checkpoint keeps (JSON): the form in use, the rows since the last solve, and
        whether the previous solve already voted to switch back to frequent."""
        return {"frequent": self.frequent, "rows": self.rows, "streak": self._streak}

    @classmethod
    def of_state(cls, state: object, threshold: int, where: str = "") -> Cadence:
        """The cadence :meth:`state` saved, each value checked; ``threshold``: the head's."""
        if not isinstance(state, dict):
            raise ValueError(f"{where}cadence is {state!r}, not a mapping")
        cadence = cls(threshold)
        cadence.frequent = _flag(state, "frequent", f"{where}cadence.")
        cadence.rows = _count(state, "rows", f"{where}cadence.")
        cadence._streak = _count(state, "streak", f"{where}cadence.", 1)
        return cadence


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
        K_factor = _factor(K)
        self.W.addmm_(RHt, cholesky_solve(Y - H @ self.W, K_factor))
        # In place: R − (R Hᵀ)(K⁻¹ H R) as one product would allocate another d×d matrix.
        self.R.addmm_(RHt, cholesky_solve(RHt.T, K_factor), alpha=-1)

    def weights(self) -> torch.Tensor:
        return self.W

    def copy(self) -> WoodburySolution:
        return WoodburySolution(self.R.clone(), self.W.clone())


RidgeSolution = CholeskySolution | InverseSolution | WoodburySolution


def _count(meta: dict[str, object], key: str, where: str, most: int | None = None) -> int:
    """``meta[key]`` as a count in [0, most]; a ``ValueError`` naming it otherwise (a checkpoint
    is outside bytes, its metadata too)."""
    value = meta.get(key)
    if type(value) is not int or value < 0 or (most is not None and value > most):
        bound = "" if most is None else f" at most {most}"
        raise ValueError(f"{where}{key} is {value!r}, not a count{bound}")
    return value


def _flag(meta: dict[str, object], key: str, where: str) -> bool:
    value = meta.get(key)
    if type(value) is not bool:
        raise ValueError(f"{where}{key} is {value!r}, not true or false")
    return value


def _exact_tensor(
    state: LearnerState, name: str, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Tensor ``name`` of a cache: float64 of ``shape``, finite (refused otherwise, naming it),
    as a new row-major tensor on ``device``. Converting another dtype would round it, and the
    point of saving a cache is that it is not rounded again."""
    tensor = state.expect(name, shape, torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"tensor {state.prefix}{name!r} holds NaN or inf")
    return tensor.to(device=device).clone(memory_format=torch.contiguous_format)


def _batches_state(
    tensors: dict[str, torch.Tensor], pending: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[int]:
    """The rows waiting in a solution, as two tensors and the batch sizes (the batches are
    absorbed one by one, so their boundaries shape the rounding)."""
    if pending:
        tensors["pending_H"] = torch.cat([H for H, _ in pending])
        tensors["pending_Y"] = torch.cat([Y for _, Y in pending])
    return [len(H) for H, _ in pending]


def _load_batches(
    state: LearnerState, dim: int, outputs: int, device: torch.device, most: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sizes = state.meta.get("pending")
    where = state.prefix
    if not isinstance(sizes, list) or not all(type(n) is int and n > 0 for n in sizes):
        raise ValueError(f"{where}pending is {sizes!r}, not a list of batch sizes")
    total = sum(sizes)
    if total > most:
        raise ValueError(f"{where}pending holds {total} rows, more than the {most} it may")
    if not total:
        return []
    H = _exact_tensor(state, "pending_H", (total, dim), device)
    Y = _exact_tensor(state, "pending_Y", (total, outputs), device)
    return list(zip(H.split(sizes), Y.split(sizes), strict=True))


def solution_state(solution: RidgeSolution) -> LearnerState:
    """Everything of ``solution`` that its future arithmetic reads: factor or inverse, weights,
    the rows absorbed since and the rows waiting, and its counters. Bounded: two d×d matrices
    at most (R and W, or the factor and W₀ — the same d×d the head would hold anyway), plus
    rows of d: ``capacity`` (d/4) absorbed and d/8 waiting for a :class:`CholeskySolution`,
    :data:`FOLD_ROWS` absorbed and 4·:data:`FOLD_ROWS` waiting for an :class:`InverseSolution`."""
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(solution, CholeskySolution):
        k = solution.rows
        tensors.update(factor=solution.factor, W0=solution.W0)
        if k:
            assert solution._U is not None and solution._Vt is not None
            assert solution._E is not None and solution._S is not None
            tensors.update(
                U=solution._U[:k], Vt=solution._Vt[:k], E=solution._E[:k], S=solution._S[:k, :k]
            )
        meta = {"kind": "cholesky", "rows": k}
    elif isinstance(solution, InverseSolution):
        tensors.update(R=solution.R, W=solution.W)
        if solution.rows:
            tensors["Z"] = solution._Z[: solution.rows]
        meta = {"kind": "inverse", "rows": solution.rows, "folded": solution.folded}
    else:
        tensors.update(R=solution.R, W=solution.W)
        meta = {"kind": "woodbury"}
    if not isinstance(solution, WoodburySolution):
        meta["pending"] = _batches_state(tensors, solution._pending)
    cpu = {name: value.detach().cpu() for name, value in tensors.items()}
    return LearnerState(cpu, meta)


def load_solution(
    state: LearnerState, dim: int, outputs: int, capacity: int, device: torch.device
) -> RidgeSolution:
    """The solution :func:`solution_state` saved, every tensor and counter checked (shape,
    float64, finite, counts within the solution's bounds); ``capacity``: the head's
    :attr:`RecursiveRidge.capacity` (a :class:`CholeskySolution`'s)."""
    kind, where = state.meta.get("kind"), state.prefix
    square, wide = (dim, dim), (dim, outputs)

    def definite(name: str) -> torch.Tensor:
        # a Cholesky factor and an inverse of G + γI have a positive diagonal: a zero there
        # loaded, and failed later as a breakdown asking to raise gamma
        tensor = _exact_tensor(state, name, square, device)
        if not bool((tensor.diagonal() > 0).all()):
            raise ValueError(f"{where}{name}: its diagonal is not positive, as a solution's is")
        return tensor

    if kind == "woodbury":
        return WoodburySolution(definite("R"), _exact_tensor(state, "W", wide, device))
    if kind == "cholesky":
        k = _count(state.meta, "rows", where, capacity)
        cholesky_solution = CholeskySolution.restored(
            definite("factor"), _exact_tensor(state, "W0", wide, device), capacity
        )
        if k:
            cholesky_solution._allocate()
            assert cholesky_solution._U is not None and cholesky_solution._Vt is not None
            assert cholesky_solution._E is not None and cholesky_solution._S is not None
            cholesky_solution._U[:k] = _exact_tensor(state, "U", (k, dim), device)
            cholesky_solution._Vt[:k] = _exact_tensor(state, "Vt", (k, dim), device)
            cholesky_solution._E[:k] = _exact_tensor(state, "E", (k, outputs), device)
            cholesky_solution._S[:k, :k] = _exact_tensor(state, "S", (k, k), device)
            cholesky_solution.rows = k
        most = min(capacity - k, max(1, capacity // 2))
        pending = _load_batches(state, dim, outputs, device, most)
        cholesky_solution._pending = pending
        cholesky_solution._pending_rows = sum(len(H) for H, _ in pending)
        return cholesky_solution
    if kind == "inverse":
        inverse = InverseSolution(definite("R"), _exact_tensor(state, "W", wide, device))
        inverse.rows = _count(state.meta, "rows", where, inverse.capacity)
        inverse.folded = _count(state.meta, "folded", where)
        if inverse.rows:
            inverse._Z[: inverse.rows] = _exact_tensor(state, "Z", (inverse.rows, dim), device)
        inverse._pending = _load_batches(state, dim, outputs, device, 4 * inverse.capacity)
        inverse._pending_rows = sum(len(H) for H, _ in inverse._pending)
        return inverse
    raise ValueError(f"{where}kind is {kind!r}, not a ridge solution (cholesky, inverse, woodbury)")


class RecursiveRidge:
    """One ridge head W = (HᵀH + γI)⁻¹ HᵀY over every row it was fitted on.

    ``solver="auto"`` and ``"lazy"`` keep the statistics G, Q; ``auto`` solves with
    :class:`InverseSolution` while its :class:`Cadence` says predictions are frequent and with
    :class:`CholeskySolution` otherwise, ``lazy`` always with the latter.
    ``solver="woodbury"`` keeps R, W (:class:`WoodburySolution`). All keep per-class counts
    of the labelled rows, so a learner knows which classes the head was taught.

    A head with statistics keeps G = HᵀH in the lower triangle (diagonal included) of ``_G``
    only; the strict upper triangle is stale, so everything that reads ``_G`` reads its lower
    triangle (:func:`learners.linalg.cholesky.cholesky`, merging by addition) or goes through
    :meth:`gram` (:func:`learners.linalg.gram.symmetric`). The last fitted rows, fewer than
    :data:`GRAM_ROWS`, wait in ``_waiting`` for their Gram update, which is applied to ``_G``
    only when :data:`GRAM_ROWS` rows have gathered (or G is handed out live by
    :meth:`statistics`): G's rounding then depends on the rows alone, not on batch sizes or on
    when predictions came, and solving or saving (:meth:`_current_gram`) changes nothing. The lazy Cholesky factor is written into one d×d
    buffer reused by every solve.
    """

    def __init__(
        self,
        dim: int,
        outputs: int,
        gamma: float,
        solver: Solver = "auto",
        device: torch.device | str = "cpu",
    ) -> None:
        self.dim, self.outputs, self.gamma, self.solver = dim, outputs, gamma, solver
        device = torch.device(device)
        self.counts = torch.zeros(outputs, dtype=torch.float64, device=device)
        self.cadence = Cadence(threshold=max(1, dim // 8))
        self._G: torch.Tensor | None = None
        self.Q: torch.Tensor | None = None
        self._waiting: torch.Tensor | None = None
        self._waiting_rows = 0
        self._factor: torch.Tensor | None = None
        self._solution: RidgeSolution | None = None
        self._fresh = True  # no row fitted yet: the inverse solution is (γI)⁻¹, no solve needed
        if solver == "woodbury":
            self._solution = WoodburySolution.fresh(dim, outputs, gamma, device)
        else:
            self._G = torch.zeros(dim, dim, dtype=torch.float64, device=device)
            self.Q = torch.zeros(dim, outputs, dtype=torch.float64, device=device)

    @property
    def capacity(self) -> int:
        """Rows a :class:`CholeskySolution` absorbs before a new factorisation is cheaper."""
        return max(1, self.dim // 4)

    @property
    def refresh(self) -> int:
        """Rows an :class:`InverseSolution` folds before R is recomputed from the statistics:
        the recomputation costs O(d³), so every 4d rows it adds O(d²/4) per row."""
        return 4 * self.dim

    @property
    def inverse(self) -> bool:
        """Whether this head solves with :class:`InverseSolution` now."""
        return self.solver == "auto" and self.cadence.frequent

    def fit(
        self,
        H: torch.Tensor,
        Y: torch.Tensor,
        labels: torch.Tensor | None = None,
        one_hot_targets: bool = False,
    ) -> None:
        """Add rows ``H`` [B, d] with targets ``Y`` [B, outputs]; ``labels`` count the classes.
        ``one_hot_targets``: Y is the one-hot of ``labels``, so HᵀY is a sum of rows per class."""
        if len(H) == 0:
            return
        if labels is not None:
            self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        self.cadence.learned(len(H))
        if self._G is None or self.Q is None:
            assert self._solution is not None
            self._solution.append(H, Y)
            return
        if self._fresh and self._solution is None and self.inverse:
            self._solution = self._solve()
        self._fresh = False
        self._defer_gram(H)
        if one_hot_targets and labels is not None:
            self.Q.index_add_(1, labels, H.T)  # no product with a [B, outputs] matrix of zeros
        else:
            self.Q.addmm_(H.T, Y)
        if self._solution is not None and self._solution.room(len(H)):
            self._solution.append(H, Y)
        else:
            self._solution = None

    def _defer_gram(self, H: torch.Tensor) -> None:
        assert self._G is not None
        if self._waiting is None:
            self._waiting = torch.empty(GRAM_ROWS, self.dim, dtype=H.dtype, device=H.device)
        start = 0
        while start < len(H):
            take = min(GRAM_ROWS - self._waiting_rows, len(H) - start)
            self._waiting[self._waiting_rows : self._waiting_rows + take] = H[start : start + take]
            self._waiting_rows += take
            start += take
            if self._waiting_rows == GRAM_ROWS:
                add_gram(self._G, self._waiting)
                self._waiting_rows = 0

    def _apply_waiting(self) -> None:
        """Apply the deferred Gram update now (before G is handed out live)."""
        if self._waiting_rows and self._G is not None:
            add_gram(self._G, self.waiting)
            self._waiting_rows = 0

    @property
    def waiting(self) -> torch.Tensor:
        """The fitted rows whose Gram update is still deferred [< GRAM_ROWS, d]."""
        if self._waiting is None:
            return torch.zeros(0, self.dim, dtype=torch.float64, device=self.counts.device)
        return self._waiting[: self._waiting_rows]

    def _current_gram(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The lower triangle of G = HᵀH over every row fitted, waiting rows included, in
        ``out`` or a new tensor (the strict upper triangle is stale); the head is unchanged."""
        assert self._G is not None
        if out is None:
            out = self._G.clone()
        else:
            out.copy_(self._G)
        if self._waiting_rows:
            add_gram(out, self.waiting)
        return out

    def fit_labels(self, H: torch.Tensor, labels: torch.Tensor) -> None:
        """Add rows ``H`` with one-hot targets for ``labels``."""
        self.fit(H, one_hot(labels, self.outputs), labels, one_hot_targets=True)

    def weights(self) -> torch.Tensor:
        """The current solution W [d, outputs] (float64)."""
        if self.cadence.solved() and self.solver == "auto":
            self._solution = None  # the cadence changed: solve in the other form
        solution = self._solution
        if isinstance(solution, InverseSolution) and solution.folded >= self.refresh:
            solution = None
        if solution is None:
            solution = self._solve()
            self._solution = solution
        return solution.weights()

    def _solve(self) -> RidgeSolution:
        assert self._G is not None and self.Q is not None
        if self.inverse:
            self._factor = None  # R takes its place: a head holds two d×d matrices, not three
            if self._fresh:
                R = torch.eye(self.dim, dtype=torch.float64, device=self._G.device)
                return InverseSolution(R.div_(self.gamma), torch.zeros_like(self.Q))
            return InverseSolution.of_statistics(self._current_gram(), self.Q, self.gamma)
        if self._factor is None:
            self._factor = torch.empty_like(self._G)
        # No other solution holds the buffer: the head's previous one was dropped, and
        # ``augmented`` factorises a copy of its own.
        G = self._current_gram(out=self._factor)
        return CholeskySolution(G, self.Q, self.gamma, self.capacity, out=G)

    def gram(self) -> torch.Tensor:
        """G = HᵀH over the rows fitted, as a new full symmetric matrix (not woodbury heads)."""
        if self._G is None:
            raise ValueError("a woodbury ridge head keeps no statistics; use solver='auto'")
        return symmetric(self._current_gram())

    def drop_cache(self) -> None:
        """Forget the solution and the cadence (heads with statistics): they are recomputed
        from the statistics, so a head restored from them solves exactly like this one."""
        if self._G is not None:
            self._solution = None
            self.cadence.reset()

    def augmented(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> RidgeSolution:
        """The solution of a temporary copy of this head with extra rows; the head is unchanged.

        In the form the head's cadence picks, so that rows appended to it later are cheap.
        """
        if self._G is not None and self.Q is not None:
            G, Q = self._current_gram(), self.Q.clone()
            for H, Y in batches:
                add_gram(G, H)
                Q.addmm_(H.T, Y)
            if self.inverse:
                return InverseSolution.of_statistics(G, Q, self.gamma)
            return CholeskySolution(G, Q, self.gamma, self.capacity, out=G)
        assert isinstance(self._solution, WoodburySolution)
        solution = self._solution.copy()
        for H, Y in batches:
            solution.append(H, Y)
        return solution

    def merge(self, other: RecursiveRidge) -> None:
        """Add ``other``'s statistics: the head then equals one fitted on both heads' rows."""
        if self._G is None or other._G is None:
            raise ValueError(
                "merging ridge heads needs statistics (solver='auto' or 'lazy'; "
                "woodbury keeps none)"
            )
        if (self.dim, self.outputs, self.gamma) != (other.dim, other.outputs, other.gamma):
            raise ValueError("cannot merge ridge heads of different size or gamma")
        assert self.Q is not None and other.Q is not None
        self._G += other._G.to(self._G.device)  # lower triangles add; the stale uppers too
        if len(other.waiting):
            add_gram(self._G, other.waiting.to(self._G.device))
        self.Q += other.Q.to(self.Q.device)
        self.counts += other.counts.to(self.counts.device)
        self._fresh = self._fresh and other._fresh
        self._solution = None

    def statistics(self) -> list[torch.Tensor]:
        """The live additive statistics G (lower triangle meaningful), Q and counts, with the
        deferred Gram update applied; after changing them in place call :meth:`drop_cache`
        (heads with statistics only)."""
        if self._G is None or self.Q is None:
            raise ValueError("a woodbury ridge head keeps no statistics; use solver='auto'")
        self._apply_waiting()
        self._fresh = False  # the caller may add rows to them: (γI)⁻¹ is no longer known to fit
        return [self._G, self.Q, self.counts]

    def state_dict(self) -> LearnerState:
        """The head's statistics and everything its future arithmetic reads; saving changes
        nothing in the head.

        A woodbury head: counts, R and W. A head with statistics: counts, ``G_applied`` (full
        and symmetric: the lower triangle of the Gram products applied so far), Q, the rows
        whose Gram update is deferred (``waiting``, fewer than :data:`GRAM_ROWS`; the statistics
        are G_applied + waitingᵀwaiting), and in the metadata the cadence and whether the head
        is fresh; and its cached solution (:func:`solution_state`), when it holds one. A
        restored head then
        applies the Gram update, solves and predicts with the same operations on the same
        operands as the head that was saved: bit for bit the same, whatever comes after."""
        tensors = {"counts": self.counts}
        # a woodbury head's cadence too: AEF-OCL redraws its balanced solution when it switches
        meta: dict[str, object] = {"cadence": self.cadence.state()}
        solution = None
        if self._G is not None and self.Q is not None:
            # not "G", the whole Gram matrix a checkpoint from before this form holds: a build
            # that knows only "G" refuses this one ("lacks G") rather than solve without the
            # waiting rows
            tensors.update({"G_applied": symmetric(self._G), "Q": self.Q})
            if self._waiting_rows:
                tensors["waiting"] = self.waiting
            meta.update(waiting=self._waiting_rows, fresh=self._fresh)
            solution = self._solution
        else:
            assert isinstance(self._solution, WoodburySolution)
            tensors.update({"R": self._solution.R, "W": self._solution.W})
        state = LearnerState({key: value.detach().cpu() for key, value in tensors.items()}, meta)
        if solution is not None:
            state.put("solution", solution_state(solution))
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        """Take a :meth:`state_dict`, every tensor and counter checked (shape, dtype, finite,
        within bounds). A checkpoint from before the head saved its cache (no ``cadence`` in
        its metadata; G then includes every row) loads too: its head drops the cache and solves
        the statistics afresh, so it equals the head that was saved only to rounding (about
        1e-14 relative), which DS-AL's compensation stream then learns from."""
        device = self.counts.device

        shapes = {
            "counts": (self.outputs,),
            "G": (self.dim, self.dim),
            "G_applied": (self.dim, self.dim),
            "R": (self.dim, self.dim),
            "Q": (self.dim, self.outputs),
            "W": (self.dim, self.outputs),
        }

        def take(name: str) -> torch.Tensor:
            if name not in state.tensors:
                raise KeyError(
                    f"checkpoint lacks the ridge head's {name} "
                    f"(was it saved with solver={self.solver!r}?)"
                )
            tensor = state.expect(name, shapes[name])
            return tensor.to(device=device, dtype=torch.float64).clone()

        counts = take("counts")
        meta, where = state.meta, state.prefix
        if self.solver == "woodbury":
            solution: RidgeSolution | None = WoodburySolution(take("R"), take("W"))
            cadence = Cadence(self.cadence.threshold)  # saved before heads saved their cadence
            if "cadence" in meta:
                cadence = Cadence.of_state(meta["cadence"], self.cadence.threshold, where)
            self.counts, self._solution, self.cadence = counts, solution, cadence
            return
        if "cadence" not in meta:  # saved before heads saved their cache
            G, Q = take("G"), take("Q")
            self.counts, self._G, self.Q = counts, G, Q
            self._waiting_rows = 0
            self._solution = self._factor = None
            self._fresh = not bool(self._G.any())
            self.cadence.reset()
            return
        G, Q = take("G_applied"), take("Q")
        if not bool(torch.isfinite(G).all() and torch.isfinite(Q).all()):
            raise ValueError(f"{where}G_applied or Q holds NaN or inf")
        waiting_rows = _count(meta, "waiting", where, GRAM_ROWS - 1)
        waiting = None
        if waiting_rows:
            waiting = torch.empty(GRAM_ROWS, self.dim, dtype=torch.float64, device=device)
            waiting[:waiting_rows] = _exact_tensor(
                state, "waiting", (waiting_rows, self.dim), device
            )
        fresh = _flag(meta, "fresh", where)
        cadence = Cadence.of_state(meta["cadence"], self.cadence.threshold, where)
        solution = None
        if "solution" in meta:
            solution = load_solution(
                state.part("solution"), self.dim, self.outputs, self.capacity, device
            )
            if isinstance(solution, WoodburySolution):
                raise ValueError(f"{where}solution is woodbury in a head with statistics")
        # all checked: only now change the head
        self.counts, self._G, self.Q = counts, G.contiguous(), Q.contiguous()
        self._waiting, self._waiting_rows = waiting, waiting_rows
        self._fresh, self.cadence = fresh, cadence
        self._solution = solution
        # a Cholesky solution factorises into the head's one buffer: it is that buffer again
        self._factor = solution.factor if isinstance(solution, CholeskySolution) else None

    def to(self, device: torch.device | str) -> Self:
        device = torch.device(device)
        self.counts = self.counts.to(device)
        if self._G is not None and self.Q is not None:
            self._G, self.Q = self._G.to(device), self.Q.to(device)
            if self._waiting is not None:
                self._waiting = self._waiting.to(device)
            self._factor = self._solution = None
        elif isinstance(self._solution, WoodburySolution):
            self._solution = WoodburySolution(
                self._solution.R.to(device), self._solution.W.to(device)
            )
        return self


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """float64 one-hot targets [B, classes]."""
    return nn.functional.one_hot(labels, classes).to(torch.float64)
