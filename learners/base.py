"""The learner protocol that every streamcl method speaks.

A learner sees each stream sample once, in micro-batches, and can be asked for predictions at
any moment. The engine drives it with four verbs, on tensors, in this order per micro-batch::

    scores = learner.predict(x, level)        # before learning: prequential accuracy
    learner.learn(x, y, levels, iterations)   # one single-pass update (``iterations`` >= 0)
    state = learner.state_dict()              # tensors + JSON, never pickle
    learner.load_state_dict(state)

A learner knows nothing about Kafka, files or Prometheus. It is built from a :class:`Problem`
(input shape and label space per hierarchy level) and its own pydantic config, validated once at
the edge. ``level`` is optional everywhere (``None``: level 0, the only level without a
hierarchy). Labels are dataset class ids in ``[0, num_classes[level])``; scores always have one
column per class of the level, and classes the learner has not been taught yet score ``-inf``.
That is all a learner says about classes: masking the classes the stream has not shown is the
engine's (``stream/engine/seen_classes.py``). ``state_dict`` is pure: saving changes nothing,
and caches are dropped when a state is loaded. What a learner can do beyond the four verbs
(predict sample by sample, adapt to drift, merge) it declares in :mod:`learners.capabilities`.

>>> import torch
>>> from learners.registry import create
>>> problem = Problem(input_shape=(4,), num_classes=(3,))
>>> nmc = create("nmc", problem)
>>> nmc.learn(torch.eye(4)[:2], torch.tensor([0, 2]))
>>> nmc.predict(torch.eye(4)[:2]).argmax(1).tolist()
[0, 2]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from learners.config_model import ConfigModel
from learners.levels import Levels
from learners.state.learner_state import LearnerState

if TYPE_CHECKING:
    from memory.faiss_index import Calibration


MAX_LEVELS = 64
"""Hierarchy levels a problem may have (HLE's hierarchies have two to four): the one bound a
dataset, a stream header, a daemon's config and a served model's sidecar all hold."""


@dataclass(frozen=True)
class Problem:
    """What a learner is asked to learn: its input and label space.

    ``parents[l][c]`` is the class at level ``l`` that class ``c`` of level ``l + 1`` belongs to;
    it is empty when there is no hierarchy. Level 0 is the coarsest level.
    """

    input_shape: tuple[int, ...]
    num_classes: tuple[int, ...]
    level_names: tuple[str, ...] = ("label",)
    parents: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.input_shape or any(int(s) <= 0 for s in self.input_shape):
            raise ValueError(
                f"Problem.input_shape must be non-empty and positive, got {self.input_shape}"
            )
        if not self.num_classes or any(int(k) <= 0 for k in self.num_classes):
            raise ValueError(
                f"Problem.num_classes must be positive per level, got {self.num_classes}"
            )
        if len(self.num_classes) > MAX_LEVELS:
            raise ValueError(
                f"Problem.num_classes has {len(self.num_classes)} levels, at most {MAX_LEVELS}"
            )
        if len(self.level_names) != len(self.num_classes):
            raise ValueError(
                f"Problem.level_names has {len(self.level_names)} names for "
                f"{len(self.num_classes)} levels"
            )
        if self.parents and len(self.parents) != len(self.num_classes) - 1:
            raise ValueError("Problem.parents needs one parent map per level below the coarsest")
        if len(set(self.level_names)) != len(self.level_names):
            raise ValueError(f"Problem.level_names must differ, got {list(self.level_names)}")
        for level, parent_map in enumerate(self.parents):
            if len(parent_map) != self.num_classes[level + 1]:
                raise ValueError(
                    f"Problem.parents[{level}] maps {len(parent_map)} classes, "
                    f"level {level + 1} has {self.num_classes[level + 1]}"
                )
            outside = [p for p in parent_map if not 0 <= int(p) < self.num_classes[level]]
            if outside:
                raise ValueError(
                    f"Problem.parents[{level}] names class {outside[0]}, "
                    f"level {level} has {self.num_classes[level]}"
                )

    @property
    def num_levels(self) -> int:
        return len(self.num_classes)

    @property
    def input_dim(self) -> int:
        """Number of input values per sample (features, or pixels of an image)."""
        dim = 1
        for size in self.input_shape:
            dim *= int(size)
        return dim


MAX_SEED = 2**32 - 1
"""The largest seed a learner takes: every seed derived from it (``seed + 1 + level``, ...)
still fits the generators torch and numpy take."""


class LearnerConfig(ConfigModel):
    """Base of every learner config: unknown keys are errors, every learner is seeded."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds every random draw of the learner")

    @model_validator(mode="before")
    @classmethod
    def _over_the_learners_defaults(cls, data: Any) -> Any:
        """A nested option given in part keeps the learner's defaults for the keys left out.

        A learner sets its own defaults for a nested section (``nmc``: ``backbone.name =
        "identity"``; ``mvp``: a frozen ``vit``; ``pl-fms``: a class-balanced memory), which
        ``streamcl learners`` lists. Pydantic applies such a default only when the section is
        absent: ``{"backbone": {"freeze": true}}`` used to build the section's own defaults (an
        ``mlp``, unfrozen) and so silently changed the learner. The given keys now go over the
        learner's default section instead."""
        if not isinstance(data, dict):
            return data
        data = _undotted(data)
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given = data.get(name)
            if not isinstance(given, dict) or field.default_factory is None:
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                merged[name] = _merged(default.model_dump(exclude_unset=True), given)
        return merged


def _undotted(options: dict[str, Any]) -> dict[str, Any]:
    """``{"backbone.name": "mlp"}`` as ``{"backbone": {"name": "mlp"}}``: the dotted names
    ``streamcl learners`` lists are accepted as keys too, beside nested ones. An option given
    twice (``backbone.name`` dotted and nested, or a value where another key puts a section)
    is a ``ValueError`` naming it; ``options`` itself is left as it was."""
    if not any(isinstance(key, str) and "." in key for key in options):
        return options
    joined: dict[str, Any] = {}
    for key, value in options.items():
        path = key.split(".") if isinstance(key, str) else [key]
        for part in reversed(path[1:]):
            value = {part: value}
        _join(joined, {path[0]: value}, "")
    return joined


def _join(into: dict[str, Any], given: dict[str, Any], where: str) -> None:
    """Add ``given`` to ``into`` (copying ``given``'s sections), refusing a key set twice."""
    for key, value in given.items():
        if key not in into:
            into[key] = _copied(value)
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _join(into[key], value, f"{where}{key}.")
        else:
            raise ValueError(f"option {where}{key} is given twice (dotted and nested)")


def _copied(value: Any) -> Any:
    return {k: _copied(v) for k, v in value.items()} if isinstance(value, dict) else value


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``, nested sections merged key by key."""
    merged = dict(defaults)
    for key, value in given.items():
        below = merged.get(key)
        merged[key] = (
            _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return merged


class Learner(ABC):
    """Base class of all learners. Subclasses set ``name`` and ``config_model``."""

    name: ClassVar[str]
    config_model: ClassVar[type[LearnerConfig]] = LearnerConfig
    # Options that keep the contract checks fast (small buffers, tiny models); see learners.checks.
    check_config: ClassVar[dict[str, Any]] = {}
    # The input shape the contract checks use; image-only learners override it.
    check_input_shape: ClassVar[tuple[int, ...]] = (16,)
    # How far (relative) a restored learner's scores may be from the uninterrupted learner's:
    # 0 (bit-identical) unless a cache the checkpoint leaves out is exact only to rounding.
    restore_tolerance: ClassVar[float] = 0.0
    # True where the learner freezes its backbone whatever ``backbone.freeze`` says (it learns
    # statistics over fixed features, no backbone weights); ``streamcl learners`` says so.
    frozen_backbone: ClassVar[bool] = False

    def __init__(self, problem: Problem, config: LearnerConfig) -> None:
        self.problem = problem
        self.config = config
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    @abstractmethod
    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        """Scores ``[B, num_classes[level]]`` (``level`` None: level 0); the argmax is the
        prediction. Classes the learner was never taught score ``-inf``."""

    @abstractmethod
    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        """Learn one micro-batch once; ``level`` holds each sample's level (None: all level 0,
        see :mod:`learners.levels`). ``iterations`` gradient steps for gradient learners (0 still
        registers the samples: memory, statistics); closed-form learners ignore it."""

    @abstractmethod
    def state_dict(self) -> LearnerState:
        """Everything needed to continue exactly where this learner is."""

    @abstractmethod
    def load_state_dict(self, state: LearnerState) -> None:
        """Restore a state produced by :meth:`state_dict` of a learner with the same config."""

    def to(self, device: torch.device | str) -> Self:
        """Move the learner to ``device``; subclasses move their tensors and call this."""
        self._device = torch.device(device)
        return self

    @property
    def memory_samples(self) -> int:
        """Samples held in a replay memory (0 for exemplar-free learners)."""
        return 0

    @property
    def memory_index_calibration(self) -> Calibration | None:
        """``nprobe`` and recall of the replay memory's approximate index, if it has one."""
        return getattr(getattr(self, "memory", None), "index_calibration", None)
