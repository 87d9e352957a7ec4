"""CLIB's sample-wise importance (Koh et al., ICLR 2022, §4.1): how much replaying a stored
sample decreases the loss on the whole memory.

Every ``period`` training steps the learner's per-sample loss is measured on every stored
sample. ``ΔL`` is the mean decrease of that loss since the previous measurement, over the samples
stored both times; the samples replayed in those steps (``B``) share the credit, each one's
importance ``H`` moving toward the part of ``ΔL`` that their current estimates do not explain:

    H(x) ← H(x) + (1 − decay) · (ΔL − mean_{x' ∈ B} H(x'))    for x ∈ B

so that the mean importance of a replay batch tracks the loss decrease it brings. A new sample
starts at the mean importance of its class in memory (of the whole memory for a new class).

Deviation from the official code (naver-ai/i-Blurry ``MemoryDataset.update_loss_history``): it
subtracts ``(1 − decay) · (ΔL_increase − mean_B H / |B|)``, whose ``mean_B H`` term has the sign
that feeds an estimate back into itself and grows without bound; the update above is the
error-correcting form of the same estimator and settles where the batch's importances explain
the measured decrease.
"""

from __future__ import annotations

import torch

from learners.state.learner_state import LearnerState


class SampleImportance:
    """Importance per memory slot, and the bookkeeping to update it from loss measurements."""

    def __init__(self, slots: int, period: int, decay: float) -> None:
        self.period = period
        self.decay = decay
        self.scores = torch.zeros(slots)
        self.previous_loss = torch.zeros(slots)
        # False for slots never measured or overwritten since the last measurement.
        self.measured = torch.zeros(slots, dtype=torch.bool)
        self.replayed: list[torch.Tensor] = []
        self.steps = 0

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (self.scores, self.previous_loss, self.measured)
        )

    def replayed_in_step(self, slots: torch.Tensor) -> None:
        """The slots one training step replays."""
        self.replayed.append(slots.to(torch.long).cpu())
        self.steps += 1

    def due(self) -> bool:
        return self.steps >= self.period

    def update(self, losses: torch.Tensor) -> None:
        """Fold in a loss measurement ``losses[slot]`` of every stored slot ``0 .. size-1``."""
        size = len(losses)
        losses = losses.detach().to("cpu", torch.float32)
        both = self.measured[:size]
        if both.any() and self.replayed:
            decrease = (self.previous_loss[:size][both] - losses[both]).mean()
            trained = torch.unique(torch.cat(self.replayed))
            residual = decrease - self.scores[trained].mean()
            self.scores[trained] += (1 - self.decay) * residual
        self.previous_loss[:size] = losses
        self.measured[:size] = True
        self.replayed = []
        self.steps = 0

    def stored(self, slot: int, peers: torch.Tensor, size: int) -> None:
        """A new sample took ``slot``; ``peers`` are the other stored slots of its class."""
        self.measured[slot] = False
        if len(peers):
            self.scores[slot] = self.scores[peers].mean()
        elif size > 1:
            others = torch.cat([self.scores[:slot], self.scores[slot + 1 : size]])
            self.scores[slot] = others.mean()
        else:
            self.scores[slot] = 0.0

    def state_dict(self, size: int) -> LearnerState:
        """The scores of the first ``size`` slots and the steps' bookkeeping."""
        replayed = torch.cat(self.replayed) if self.replayed else torch.empty(0, dtype=torch.long)
        tensors = {
            "scores": self.scores[:size].clone(),
            "previous_loss": self.previous_loss[:size].clone(),
            "measured": self.measured[:size].clone(),
            "replayed": replayed,
        }
        meta = {"steps": self.steps, "replayed_sizes": [len(r) for r in self.replayed]}
        return LearnerState(tensors, meta)

    def load_state_dict(self, state: LearnerState) -> None:
        tensors, meta = state.tensors, state.meta
        size = len(tensors["scores"])
        self.scores[:size] = tensors["scores"]
        self.previous_loss[:size] = tensors["previous_loss"]
        self.measured[:size] = tensors["measured"]
        sizes = meta["replayed_sizes"]
        self.replayed = list(torch.split(tensors["replayed"], sizes)) if sizes else []
        self.steps = int(meta["steps"])
