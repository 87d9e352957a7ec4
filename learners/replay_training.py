"""The configuration, training loop, checkpoint and device moves shared by the replay learners
(ER, UER, PL-FMS, MVP), and the fused predict-before-learn of those that can.

One learn loop (:meth:`ReplayTraining.learn`): mark the batch's classes seen, then per iteration
choose which stream samples take part (all, unless a learner thins them out, as PL-FMS's
flexible sampling does), fill the batch up with as many memory samples as the stream batch
holds (plus one per dropped stream sample), take one step (``_step``), and finally offer the
batch to the memory.

Fused prediction (:class:`~learners.capabilities.FusedPrediction`): the prequential prediction
and the first step see the same weights and the same stream batch, so the backbone features the
first step computes serve both, and predicting the batch before learning it costs no forward of
its own. The features of a stream sample depend on the mode of no layer of a model built only
from :data:`MODE_FREE` modules, so the step's training-mode features equal ``predict``'s; a
learner whose model holds any other module (dropout, batch norm) predicts separately.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, Self

import torch
from pydantic import Field
from torch import nn

from learners.backbones.backbone import MLP, BackboneConfig, Identity, SmallCNN
from learners.backbones.prompts import PromptPool
from learners.backbones.vit import Attention, Block, Mlp, PatchEmbed, ViT
from learners.base import LearnerConfig, Problem
from learners.capabilities import FusedPrediction
from learners.finite_step import finite_step
from learners.levels import Levels, level_index, level_rows, padded_scores, sample_levels
from learners.state.learner_state import LearnerState
from learners.state.torch_state import (
    load_module_state,
    load_optimizer_state,
    module_state,
    optimizer_state,
)
from memory import MemoryConfig, build_memory

# Modules whose forward never reads ``self.training``.
MODE_FREE: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.ReLU,
    nn.GELU,
    nn.Flatten,
    nn.Identity,
    nn.Conv2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.LayerNorm,
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
    nn.ParameterList,
    MLP,
    SmallCNN,
    Identity,
    # the ViT of MVP and its prompt pool: no dropout, no batch statistics
    Attention,
    Mlp,
    Block,
    PatchEmbed,
    ViT,
    PromptPool,
)


def mode_free(model: nn.Module) -> bool:
    """Whether ``model`` computes the same in training and in evaluation mode."""
    return all(type(module) in MODE_FREE for module in model.modules())


class ReplayConfig(LearnerConfig):
    """Options of every learner trained by gradient steps on stream plus replayed samples."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    replay_batch_size: int | None = Field(
        None, ge=0, description="memory samples per step; default: the stream batch size"
    )


def make_optimizer(model: nn.Module, config: ReplayConfig) -> torch.optim.Optimizer:
    """Adam or SGD over ``model``'s trainable parameters.

    Adam runs ``fused``: one kernel per parameter for the whole update, 2.6× faster than
    ``foreach`` on ER's default model on two CPU threads (bench/loop.py). Its weights equal the
    per-parameter loop's to float32 rounding (about 1e-8 after 50 steps), not bit for bit; the
    pinned results of tests/learners/test_replay_training.py are unchanged. SGD keeps
    ``foreach`` (one kernel launch per update op for all parameters, identical to the loop)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


class ReplayTraining:
    """The training loop, checkpoint and device moves shared by learners trained by gradient
    steps with a replay memory (ER and those built like it): a ``model`` holding every trained
    parameter, an ``optimizer``, per-level masks of the classes ``seen`` and a ``memory``, which
    a learner's constructor sets up with :meth:`_build_training`, and
    ``config.replay_batch_size``. Mixed in before :class:`~learners.base.Learner`; learners with
    more state extend these methods and call them.

    A learner supplies ``_step`` and may override ``_stream_selection``; one that can serve the
    prequential prediction from its step's features (:class:`FusedPrediction`) overrides
    ``_scores``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    seen: list[torch.Tensor]
    memory: Any
    config: Any
    problem: Problem
    device: torch.device
    predict: Any

    def _build_training(
        self,
        model: nn.Module,
        embed: Callable[[torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Set up around ``model`` (every trained parameter) what each replay learner builds
        the same way: no class seen yet, the memory of ``config.memory`` (embedding samples by
        ``embed`` and scoring them by ``_sample_losses`` for the policies that ask), and
        ``optimizer`` (default: :func:`make_optimizer`)."""
        self.model = model
        self.seen = [torch.zeros(k, dtype=torch.bool) for k in self.problem.num_classes]
        self.memory = build_memory(
            self.config.memory,
            seed=self.config.seed,
            embed=embed,
            loss=self._sample_losses,
            input_shape=self.problem.input_shape,
        )
        self.optimizer = optimizer or make_optimizer(model, self.config)

    @property
    def memory_samples(self) -> int:
        return len(self.memory)

    def _sample_losses(self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Each sample's loss under the current model, for memories that rank by loss."""
        raise NotImplementedError

    def _step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        level: torch.Tensor,
        stream_rows: int,
        seen_before: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """One gradient step on a batch whose first ``stream_rows`` rows are stream samples and
        the rest replayed. With ``seen_before`` (fused prediction), also returns the stream
        rows' scores under the weights before the step (:meth:`_update` makes them)."""
        raise NotImplementedError

    def _update(
        self,
        loss: torch.Tensor,
        features: torch.Tensor,
        level: torch.Tensor,
        stream_rows: int,
        seen_before: list[torch.Tensor] | None,
    ) -> torch.Tensor | None:
        """Step the optimizer on ``loss``; before that, with ``seen_before``, score the stream
        rows from the step's own ``features`` (the weights are about to change)."""
        scores = None
        if seen_before is not None:
            with torch.no_grad():
                scores = self._scores(
                    features[:stream_rows].detach(), level[:stream_rows], seen_before
                )
        finite_step(self.optimizer, loss)
        return scores

    def _stream_selection(self, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor | None:
        """Which stream samples take part in this step (a bool mask); None: all of them."""
        return None

    def _memory_first(self) -> bool:
        """Whether the batch enters the memory before the steps (so it can be replayed in
        them) instead of after."""
        return False

    def _scores(
        self, features: torch.Tensor, level: torch.Tensor, seen: list[torch.Tensor]
    ) -> torch.Tensor:
        """``predict``'s scores of samples with these backbone ``features`` at their ``level``,
        with the classes ``seen`` then, padded with ``-inf`` to the widest level."""
        raise NotImplementedError

    def _begin(
        self, x: torch.Tensor, y: torch.Tensor, level: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Start a ``learn``: the batch on the device, its classes marked seen, the model in
        training mode; returns the batch (with its per-sample levels) and how many memory
        samples to replay per step."""
        x = x.to(self.device, torch.float32)
        y = y.to(self.device)
        level = sample_levels(level, y)
        for lvl, rows in level_rows(level, self.problem.num_levels):
            self.seen[lvl][y[rows]] = True
        replay = len(y) if self.config.replay_batch_size is None else self.config.replay_batch_size
        self._train_mode(True)
        return x, y, level, replay

    @functools.cached_property
    def _mode_free(self) -> bool:
        return mode_free(self.model)

    def _train_mode(self, training: bool) -> None:
        # ``Module.train`` walks every submodule; predict and learn alternate on every batch.
        if self.model.training != training:
            self.model.train(training)

    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        self._learn(x, y, level, iterations, predict=False)

    def predict_then_learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        scores = self._learn(x, y, level, iterations, predict=True)
        assert scores is not None
        return scores

    def _learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels, iterations: int, predict: bool
    ) -> torch.Tensor | None:
        level = sample_levels(level, y)
        scores = None
        seen_before: list[torch.Tensor] = []
        if predict:
            if isinstance(self, FusedPrediction) and iterations > 0 and self._mode_free:
                seen_before = [s.clone() for s in self.seen]
            else:
                scores = self._predict_padded(x, level)
        x, y, level, replay = self._begin(x, y, level)
        memory_first = self._memory_first()
        if memory_first:
            self.memory.add(x, y, level)
        for iteration in range(iterations):
            keep = self._stream_selection(y, level)
            bx, by, blevel = (x, y, level) if keep is None else (x[keep], y[keep], level[keep])
            wanted = replay + (0 if keep is None else len(y) - len(by))
            stream_rows = len(by)
            if wanted > 0 and len(self.memory) > 0:
                mx, my, mlevel = self.memory.sample(wanted, query=x, query_stored=memory_first)
                bx = torch.cat([bx, mx.to(self.device, torch.float32)])
                by = torch.cat([by, my.to(self.device)])
                blevel = torch.cat([blevel, mlevel.to(self.device)])
            fuse = iteration == 0 and bool(seen_before)
            if fuse and keep is not None:
                # some stream samples sit this step out: the prediction needs their features too
                with torch.no_grad():
                    scores = self._scores(self._features(x), level, seen_before)
                fuse = False
            if fuse:
                scores = self._step(bx, by, blevel, stream_rows, seen_before)
            elif len(by):
                self._step(bx, by, blevel, stream_rows)
        if not memory_first:
            self.memory.add(x, y, level)
        return scores

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of ``x`` (on the device, float32), for ``_scores``."""
        raise NotImplementedError

    def _predict_padded(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """``predict`` of each sample at its own level, padded with ``-inf`` to the widest."""
        return padded_scores(
            level, self.problem.num_classes, len(level), lambda at, lvl: self.predict(x[at], lvl)
        )

    def state_dict(self) -> LearnerState:
        state = LearnerState({f"seen.{lvl}": seen.cpu() for lvl, seen in enumerate(self.seen)})
        state.put("model", module_state(self.model))
        state.put("optimizer", optimizer_state(self.optimizer))
        state.put("memory", self.memory.state_dict())
        return state

    def load_state_dict(self, state: LearnerState) -> None:
        load_module_state(self.model, state.part("model"))
        load_optimizer_state(self.optimizer, state.part("optimizer"))
        self.seen = [
            state.expect(f"seen.{lvl}", (classes,), torch.bool).to(self.device)
            for lvl, classes in enumerate(self.problem.num_classes)
        ]
        self.memory.load_state_dict(state.part("memory"))
        self.memory.check_samples(self.problem.input_shape, self.problem.num_classes)

    def to(self, device: torch.device | str) -> Self:
        super().to(device)  # type: ignore[misc]  # the Learner this is mixed into
        self.model.to(self.device)
        self.seen = [s.to(self.device) for s in self.seen]
        return self


class HeadPrediction:
    """``predict``, ``predict_levels`` and the fused prediction's ``_scores`` of a replay learner
    with one head per level over shared backbone features (ER, PL-FMS, UER's dot-product head).
    Mixed in before :class:`ReplayTraining`; the learner supplies :meth:`_head`."""

    backbone: nn.Module
    seen: list[torch.Tensor]
    problem: Problem
    device: torch.device
    _train_mode: Any

    def _head(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """Level ``level``'s head's logits of backbone ``features``, every class scored."""
        raise NotImplementedError

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of any input, for the memory's embedding policies."""
        return self.backbone(x.to(self.device, torch.float32))

    def _masked(self, features: torch.Tensor, level: int, seen: torch.Tensor) -> torch.Tensor:
        return self._head(features, level).masked_fill(~seen, float("-inf"))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        level = level_index(level)
        self._train_mode(False)
        features = self.backbone(x.to(self.device, torch.float32))
        return self._masked(features, level, self.seen[level])

    @torch.no_grad()
    def predict_levels(self, x: torch.Tensor, levels: list[int]) -> list[torch.Tensor]:
        self._train_mode(False)
        features = self.backbone(x.to(self.device, torch.float32))
        return [self._masked(features, level, self.seen[level]) for level in levels]

    def _scores(
        self, features: torch.Tensor, level: torch.Tensor, seen: list[torch.Tensor]
    ) -> torch.Tensor:
        return padded_scores(
            level,
            self.problem.num_classes,
            len(level),
            lambda at, lvl: self._masked(features[at], lvl, seen[lvl]),
        )
