"""The one place where learners are registered by name.

The CLI, the daemon, the benchmarks and the contract tests all look learners up here. Modules
are imported lazily so that ``streamcl learners`` and the daemon start fast and an optional
dependency is only needed by the learner that uses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError

from learners.base import Learner, LearnerConfig, Problem

# name -> "module:Class". Add a learner by adding one line here.
_BUILTIN: dict[str, str] = {
    "er": "learners.er:ER",
    "mvp": "learners.mvp:MVP",
    "nmc": "learners.nmc:NMC",
    "uer": "learners.uer:UER",
    "acil": "learners.acil:ACIL",
    "aef-ocl": "learners.aef_ocl:AEFOCL",
    "ds-al": "learners.ds_al:DSAL",
    "pl-fms": "learners.pl_fms:PLFMS",
    "slda": "learners.slda:SLDA",
}

# Learners whose name carries an argument, e.g. ``river:tree.HoeffdingTreeClassifier``:
# prefix -> "module:Class:<what the argument is>".
_PREFIXED: dict[str, str] = {
    "river": "learners.river_learner:RiverLearner:module.Class",
}


class UnknownLearnerError(KeyError):
    """A learner name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


class LearnerConfigError(ValueError):
    """A learner config that does not validate; the message names the field."""


def names() -> list[str]:
    """Registered learner names (prefixed families shown as ``prefix:<arg>``)."""
    return sorted(_BUILTIN) + [f"{prefix}:<{arg}>" for prefix, arg in _prefixed_args().items()]


def _prefixed_args() -> dict[str, str]:
    return {prefix: target.rsplit(":", 1)[1] for prefix, target in _PREFIXED.items()}


def _import(target: str) -> type[Learner]:
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Learner)):
        raise TypeError(f"{target} is not a Learner subclass")
    return cls


def get(name: str) -> type[Learner]:
    """The learner class registered under ``name``."""
    if name in _BUILTIN:
        return _import(_BUILTIN[name])
    prefix = name.split(":", 1)[0]
    if ":" in name and prefix in _PREFIXED:
        return _import(_PREFIXED[prefix].rsplit(":", 1)[0])
    raise UnknownLearnerError(f"unknown learner {name!r}; known learners: {', '.join(names())}")


def validate_config(name: str, options: dict[str, Any] | None) -> LearnerConfig:
    """Validate ``options`` against the learner's config model, naming the failing field."""
    cls = get(name)
    options = dict(options or {})
    if ":" in name:
        options.setdefault("target", name.split(":", 1)[1])
    try:
        return cls.config_model.model_validate(options)
    except ValidationError as exc:
        raise LearnerConfigError(
            describe_validation_error(exc, f"learner {name!r} config")
        ) from None


def describe_validation_error(
    exc: ValidationError, where: str, names: Mapping[str, str] | None = None
) -> str:
    """One line naming every failing field of a pydantic error; ``names``: what to call a
    top-level field instead (the command-line flag that set it)."""
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if loc and names and loc[0] in names:
            loc[0] = names[loc[0]]
        location = ".".join(loc) or "(root)"
        parts.append(f"{location}: {error['msg']}")
    return f"invalid {where}: " + "; ".join(parts)


def create(
    name: str,
    problem: Problem,
    options: dict[str, Any] | LearnerConfig | None = None,
    device: torch.device | str = "cpu",
) -> Learner:
    """Build the learner ``name`` for ``problem`` with validated ``options`` on ``device``.

    A config whose parts cannot be allocated (a backbone layer of 10**8 units) is a
    :class:`LearnerConfigError` that says so, not the allocator's error."""
    cls = get(name)
    config = options if isinstance(options, LearnerConfig) else validate_config(name, options)
    try:
        learner = cls(problem, config)
        return learner.to(device)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
            raise
        raise LearnerConfigError(
            f"invalid learner config: {name!r} as configured needs more memory than "
            f"{torch.device(device).type} has ({str(exc).splitlines()[0][:200]})"
        ) from None
