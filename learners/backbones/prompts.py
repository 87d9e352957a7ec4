"""MVP's prompt pool (Moon et al., ICCV 2023, §3.2–3.3; KHU-AGI/Si-Blurry ``models/mvp.py``).

The pool holds ``P`` keys, one e-prompt and one logit mask per key, and a single g-prompt:

- **g-prompt** — ``len(g_layers) × g_length`` tokens shared by every instance, prepended at the
  early layers ``g_layers`` (prompt tuning: appended to the token sequence before a block and
  dropped after it);
- **e-prompts** — per key, ``len(e_layers) × e_length`` tokens prepended at layers ``e_layers``;
- **selection** — each instance picks the key nearest its frozen ``[CLS]`` query by cosine
  distance ``d(q, k_i) = 1 − cos(q, k_i)``, scaled by ``count_i + 1`` where ``count_i`` is how
  often key ``i`` was chosen in training, so that rarely used keys get picked (the official
  ``distance * mass``);
- **instance-wise logit mask** — a learnable vector per key, applied to the logits as
  ``2·sigmoid(mask)`` (initialised to −1, as the official code does);
- **contrastive visual prompt tuning (CVPT) loss** — pulls the selected key towards the query
  and pushes it away from the other keys, with the distances divided by the key's ``count + 1``:
  ``−log( mean_j e^{d(k_s,k_j)/m_s} / (e^{d(q,k_s)/m_s} + mean_j e^{d(k_s,k_j)/m_s}) )``.

Deviation: the CVPT loss is computed per instance and averaged. The last official commit that
parses (61bd5eb; the two later commits have an indentation error) forms one ratio of batch means
whose mass tensor broadcasts ``[B,1]`` against ``[B,1,P]``; the per-instance form is the
equation that code approximates. One key per instance (the official ``selection_size=1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class PromptPool(nn.Module):
    """Keys, g-/e-prompts and per-key logit masks (one mask per hierarchy level)."""

    count: torch.Tensor

    def __init__(
        self,
        pool_size: int,
        embed_dim: int,
        num_classes: Sequence[int],
        g_layers: Sequence[int],
        g_length: int,
        e_layers: Sequence[int],
        e_length: int,
        seed: int,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.g_layers, self.e_layers = list(g_layers), list(e_layers)
        self.g_length, self.e_length = g_length, e_length
        self.keys = nn.Parameter(torch.randn(pool_size, embed_dim, generator=generator))
        self.g_prompts = nn.Parameter(
            torch.randn(len(self.g_layers) * g_length, embed_dim, generator=generator)
        )
        self.e_prompts = nn.Parameter(
            torch.randn(pool_size, len(self.e_layers) * e_length, embed_dim, generator=generator)
        )
        self.masks = nn.ParameterList(
            nn.Parameter(torch.full((pool_size, k), -1.0)) for k in num_classes
        )
        self.register_buffer("count", torch.zeros(pool_size))

    @property
    def pool_size(self) -> int:
        return int(self.keys.shape[0])

    def distances(self, query: torch.Tensor) -> torch.Tensor:
        """``1 − cos(q_b, k_i)`` for every instance and key, ``[B, P]`` (differentiable in keys)."""
        return 1 - F.cosine_similarity(query.unsqueeze(1), self.keys.unsqueeze(0), dim=-1)

    def mass(self) -> torch.Tensor:
        """``count + 1`` per key: how strongly each key's distances are penalised."""
        return self.count + 1

    def select(self, distances: torch.Tensor, frequency_penalty: bool = True) -> torch.Tensor:
        """The key index of each instance: least distance, scaled by use when penalised."""
        scaled = distances.detach() * self.mass() if frequency_penalty else distances.detach()
        return scaled.argmin(dim=1)

    @torch.no_grad()
    def record(self, index: torch.Tensor) -> None:
        """Count the keys chosen by a training step."""
        self.count += torch.bincount(index, minlength=self.pool_size).to(self.count.dtype)

    def layer_prompts(self, index: torch.Tensor, layer: int) -> torch.Tensor | None:
        """The prompt tokens to prepend before block ``layer``, ``[B, L, D]``, or ``None``."""
        parts = []
        if layer in self.g_layers:
            at = self.g_layers.index(layer) * self.g_length
            g = self.g_prompts[at : at + self.g_length]
            parts.append(g.unsqueeze(0).expand(len(index), -1, -1))
        if layer in self.e_layers:
            at = self.e_layers.index(layer) * self.e_length
            parts.append(self.e_prompts[index, at : at + self.e_length])
        return torch.cat(parts, dim=1) if parts else None

    def logit_mask(self, index: torch.Tensor, level: int = 0) -> torch.Tensor:
        """``2·sigmoid(mask_s)`` of each instance's key, ``[B, num_classes[level]]``."""
        return 2 * torch.sigmoid(self.masks[level][index])

    def contrastive_loss(
        self, distances: torch.Tensor, index: torch.Tensor, frequency_penalty: bool = True
    ) -> torch.Tensor:
        """The CVPT loss of the selected keys (see the module docstring)."""
        rows = torch.arange(len(index), device=index.device)
        to_query = distances[rows, index]
        selected = self.keys[index]
        to_keys = 1 - F.cosine_similarity(selected.unsqueeze(1), self.keys.unsqueeze(0), dim=-1)
        mass = self.mass()[index] if frequency_penalty else torch.ones_like(to_query)
        apart = torch.exp(to_keys / mass.unsqueeze(1)).mean(dim=1)
        near = torch.exp(to_query / mass)
        return -torch.log(apart / (near + apart)).mean()
