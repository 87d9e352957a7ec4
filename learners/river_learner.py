"""River classifiers as streamcl learners: ``river:<module.Class>``.

``river:tree.HoeffdingTreeClassifier`` wraps ``river.tree.HoeffdingTreeClassifier``; any
classifier of river can be named, with its constructor parameters and an optional chain of
river transformers in front (a river ``Pipeline``), all given as config data::

    {"params": {"grace_period": 100},
     "preprocessing": [{"target": "preprocessing.StandardScaler"}]}

A parameter value ``{"target": "optim.SGD", "params": {"lr": 0.05}}`` builds a nested river
object. Names resolve only to classes defined inside the ``river`` package (``module.Class``
below ``river``); no other code can be named from a config.

Each input becomes a river dict ``{0: x_0, 1: x_1, ...}`` (images flattened), each label the
integer class id, and samples are learned one at a time with ``learn_one``, in stream order.
Scores map river's ``predict_proba_one`` onto the engine's class space:

- a class the learner has been taught scores river's probability, or 0 when river's
  distribution leaves it out (river has not seen it where this input falls, e.g. a tree leaf);
- a class never taught scores ``-inf`` (the learner protocol), even if river gives it a
  probability (binary-only classifiers always score both classes);
- an empty distribution (river cannot predict yet) scores every class ``-inf``: the learner
  abstains, as ``progressive_val_score`` skips such samples;
- the argmax is river's own choice: where classes tie, the one river's ``predict_one`` picks
  (the first in river's order) stays on top and the others are lowered by one ulp.

Scores are float64, river's probabilities unrounded.

``iterations`` is ignored: every sample is learned exactly once, as river does. The learner is
a :class:`~learners.capabilities.SequentialLearner` (test-then-train per sample inside a batch,
so prequential accuracy equals river's at any batch size) and supports the ``reset`` drift
action (a fresh clone of the configured model). Checkpoints carry the models as a sealed pickle
(``learners/state/sealed_pickle.py``: a digest and a restricted unpickler); the daemon loads
such a checkpoint only when the HMAC over the whole file verifies under its key
(stream/daemon/checkpoint.py).
"""

from __future__ import annotations

import bisect
import importlib
import inspect
import math
import warnings
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from learners.base import Learner, LearnerConfig, Problem
from learners.capabilities import DriftAction, DriftAdaptive, SequentialLearner
from learners.config_model import ConfigModel
from learners.levels import Levels, level_index, sample_levels
from learners.state.learner_state import LearnerState
from learners.state.sealed_pickle import seal, unseal


class RiverComponent(ConfigModel):
    """One river object: its class inside ``river`` and its constructor parameters."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        description="a river class as module.Class, e.g. preprocessing.StandardScaler"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="constructor keyword arguments"
    )

    @field_validator("target")
    @classmethod
    def _resolves(cls, target: str) -> str:
        resolve(target)
        return target


class RiverConfig(LearnerConfig):
    target: str = Field(
        description="the river classifier as module.Class; the name river:<module.Class> sets it"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="constructor keyword arguments; {'target', 'params'} builds a river object",
    )
    preprocessing: list[RiverComponent] = Field(
        default_factory=list,
        description="river transformers applied in order before the classifier",
    )

    @field_validator("target")
    @classmethod
    def _is_classifier(cls, target: str) -> str:
        from river import base

        if not issubclass(resolve(target), base.Classifier):
            raise ValueError(f"river.{_strip(target)} is not a river classifier")
        return target

    @field_validator("preprocessing")
    @classmethod
    def _are_transformers(cls, steps: list[RiverComponent]) -> list[RiverComponent]:
        from river import base

        for step in steps:
            if not issubclass(resolve(step.target), base.Transformer):
                raise ValueError(f"river.{_strip(step.target)} is not a river transformer")
        return steps

    @model_validator(mode="after")
    def _builds(self) -> RiverConfig:
        build_model(self)
        return self


def _strip(path: str) -> str:
    return path.removeprefix("river.")


def resolve(path: str) -> type:
    """The class ``river.<path>``; nothing outside the ``river`` package resolves."""
    name = _strip(path)
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() and not p.startswith("_") for p in parts):
        raise ValueError(f"{path!r} is not a river class path like tree.HoeffdingTreeClassifier")
    module_name = "river." + ".".join(parts[:-1])
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"river has no module {module_name!r} (from {path!r})") from None
    obj = getattr(module, parts[-1], None)
    if not (isinstance(obj, type) and obj.__module__.startswith("river.")):
        raise ValueError(f"river.{name} is not a class of river")
    return obj


def _value(value: Any) -> Any:
    """A config value as a constructor argument: ``{"target": ...}`` builds a river object."""
    if isinstance(value, dict) and "target" in value:
        component = RiverComponent.model_validate(value)
        return construct(resolve(component.target), component.params)
    if isinstance(value, list):
        return [_value(item) for item in value]
    return value


def construct(cls: type, params: dict[str, Any]) -> Any:
    """``cls(**params)`` with nested river objects built, errors naming the class."""
    kwargs = {key: _value(value) for key, value in params.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"river.{cls.__module__.split('.')[1]}.{cls.__name__}: {exc}") from None


def build_model(config: RiverConfig) -> Any:
    """The configured river classifier (a ``Pipeline`` when there is preprocessing), unfitted."""
    from river import compose

    cls = resolve(config.target)
    params = dict(config.params)
    if "seed" in inspect.signature(cls).parameters and "seed" not in params:
        params["seed"] = config.seed
    model = construct(cls, params)
    steps = [construct(resolve(step.target), step.params) for step in config.preprocessing]
    return compose.Pipeline(*steps, model) if steps else model


def _picks_argmax_of_proba(model: Any) -> bool:
    """Whether river's ``predict_one`` for ``model`` is the argmax of ``predict_proba_one``."""
    from river import base, compose

    final = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return type(final).predict_one is base.Classifier.predict_one


def _probe(config: RiverConfig, input_dim: int) -> None:
    """Teach a throwaway copy of the model two samples and ask it for one prediction: river
    checks many constructor parameters only when the model is used (``KNNClassifier`` with
    ``n_neighbors: 0`` builds, then fails its first prediction), which ended a replay with
    ``failed: ValueError`` naming no option. Such a model is a config error now, before any
    sample of the stream is learned."""
    from learners.registry import LearnerConfigError

    model = build_model(config)
    samples = [({i: float(value) for i in range(input_dim)}, value) for value in (0, 1)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for features, label in samples:
                model.learn_one(features, label)
            model.predict_proba_one(samples[0][0])
    except Exception as exc:  # whatever river raises: the model as configured cannot run
        raise LearnerConfigError(
            f"invalid learner 'river:{config.target}' config: params: the model fails on its "
            f"first samples ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


class RiverLearner(Learner, SequentialLearner, DriftAdaptive):
    """A river classifier learning one sample at a time (river:<module.Class>)."""

    name = "river"
    config_model = RiverConfig
    config: RiverConfig
    drift_actions = frozenset({DriftAction.RESET})

    def __init__(self, problem: Problem, config: RiverConfig) -> None:
        super().__init__(problem, config)
        self.models = [build_model(config) for _ in problem.num_classes]
        for level, (model, k) in enumerate(zip(self.models, problem.num_classes, strict=True)):
            if k > 2 and not model._multiclass:
                from learners.registry import LearnerConfigError

                raise LearnerConfigError(
                    f"invalid learner 'river:{config.target}' config: target: it is a binary "
                    f"classifier, but level {problem.level_names[level]!r} has {k} classes"
                )
        _probe(config, problem.input_dim)
        self._width = max(problem.num_classes)
        self._keys = list(range(problem.input_dim))
        self._reset_learned()
        self._argmax_of_proba = [_picks_argmax_of_proba(m) for m in self.models]

    def _reset_learned(self) -> None:
        # Per level: which classes were taught (a flag per class and the list, in class order),
        # and the score row each prediction starts from (0 for taught classes, -inf elsewhere and
        # beyond the level's classes).
        self.learned = [[False] * k for k in self.problem.num_classes]
        self._taught: list[list[int]] = [[] for _ in self.problem.num_classes]
        self._blank = [[-math.inf] * self._width for _ in self.problem.num_classes]

    def _teach(self, level: int, label: int) -> None:
        if not self.learned[level][label]:
            self.learned[level][label] = True
            bisect.insort(self._taught[level], label)
            self._blank[level][label] = 0.0

    def _dicts(self, x: torch.Tensor) -> list[dict[int, float]]:
        keys = self._keys
        rows = x.detach().cpu().reshape(len(x), -1).tolist()
        return [dict(zip(keys, row, strict=False)) for row in rows]  # rows are all as long

    def _choice(self, proba: dict[Any, float], features: dict[int, float], level: int) -> int:
        """The class river's ``predict_one`` picks among the taught ones in ``proba``, or -1."""
        learned = self.learned[level]
        k = len(learned)
        if not self._argmax_of_proba[level]:
            choice = self.models[level].predict_one(features)
            taught = choice is not None and 0 <= int(choice) < k and learned[int(choice)]
            return int(choice) if taught else -1
        # Python's max keeps the first of tied classes, as river's predict_one does.
        winner, best = -1, 0.0
        for label, p in proba.items():
            c = int(label)
            if 0 <= c < k and learned[c] and (winner < 0 or p > best):
                winner, best = c, p
        return winner

    def _score(self, features: dict[int, float], level: int) -> list[float]:
        """One sample's score row at ``level`` (``self._width`` wide)."""
        proba = self.models[level].predict_proba_one(features)
        if not proba:
            return [-math.inf] * self._width
        row = list(self._blank[level])
        learned = self.learned[level]
        k = len(learned)
        for label, p in proba.items():
            c = int(label)
            if 0 <= c < k and learned[c]:
                row[c] = float(p)
        winner = self._choice(proba, features, level)
        if winner >= 0:
            # Keep river's choice on top where classes tie.
            best = row[winner]
            below = math.nextafter(best, -math.inf)
            for c in self._taught[level]:
                if c != winner and row[c] >= best:
                    row[c] = below
        return row

    def predict(self, x: torch.Tensor, level: int | None = None) -> torch.Tensor:
        level = level_index(level)
        rows = [self._score(features, level) for features in self._dicts(x)]
        # numpy first: torch.tensor on nested lists costs several times more.
        scores = np.array(rows, dtype=np.float64).reshape(len(rows), self._width)
        return torch.from_numpy(scores[:, : self.problem.num_classes[level]]).to(self.device)

    def learn(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> None:
        levels = sample_levels(level, y).tolist()
        for features, label, lvl in zip(self._dicts(x), y.tolist(), levels, strict=True):
            self.models[lvl].learn_one(features, label)
            self._teach(lvl, label)

    def test_then_train(
        self, x: torch.Tensor, y: torch.Tensor, level: Levels = None, iterations: int = 1
    ) -> torch.Tensor:
        predicted = []
        models, learned = self.models, self.learned
        levels = sample_levels(level, y).tolist()
        for features, label, lvl in zip(self._dicts(x), y.tolist(), levels, strict=True):
            model = models[lvl]
            proba = model.predict_proba_one(features)
            predicted.append(self._choice(proba, features, lvl) if proba else -1)
            model.learn_one(features, label)
            if not learned[lvl][label]:
                self._teach(lvl, label)
        return torch.tensor(predicted, dtype=torch.long)

    def on_drift(self, action: DriftAction) -> None:
        if action is DriftAction.RESET:
            self.models = [model.clone() for model in self.models]
            self._reset_learned()

    def state_dict(self) -> LearnerState:
        data, sealed = seal(self.models)
        learned = [[c for c, taught in enumerate(row) if taught] for row in self.learned]
        return LearnerState(
            {"models": torch.frombuffer(bytearray(data), dtype=torch.uint8)},
            {"target": self.config.target, "sealed": sealed, "learned": learned},
        )

    def load_state_dict(self, state: LearnerState) -> None:
        if state.meta.get("target") != self.config.target:
            raise ValueError(
                f"checkpoint holds river:{state.meta.get('target')}, not river:{self.config.target}"
            )
        models = unseal(state.tensors["models"].numpy().tobytes(), state.meta["sealed"])
        expected = [type(m) for m in self.models]
        if not isinstance(models, list) or [type(m) for m in models] != expected:
            raise ValueError("checkpoint's river models do not match this learner's config")
        self.models = models
        self._argmax_of_proba = [_picks_argmax_of_proba(m) for m in self.models]
        self._reset_learned()
        for level, classes in enumerate(state.meta["learned"]):
            for label in classes:
                self._teach(level, int(label))
