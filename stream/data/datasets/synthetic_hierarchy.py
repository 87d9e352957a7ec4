"""A seeded synthetic class hierarchy: Gaussian clusters under parents, any depth.

``synthetic-hierarchy[:k=v,...]`` generates features ``[n, dim]`` whose labels form a tree. The
``branching`` option ``AxBxC`` makes ``A`` root classes, each with ``B`` children, each with ``C``
children (levels of ``A``, ``A·B`` and ``A·B·C`` classes). Class centres are drawn top-down: a
root centre is ``N(0, separation²·I)``, a child's centre is its parent's plus
``N(0, (separation·shrink^depth)²·I)``, so siblings are closer to each other than to cousins.
Each leaf class gets ``train`` and ``test`` samples, its centre plus ``N(0, noise²·I)``.

Everything comes from one numpy PCG64 generator seeded with ``seed``, so the same spec gives the
same arrays on any machine, in milliseconds; a recorded stream can name the spec and be replayed.

Bounds, checked before anything is generated (a recorded stream's header is held to them when
it is read): ``seed`` in ``[0, 2**32 - 1]``; at most 64 levels and ``2**24`` leaf classes;
float options finite; the arrays generation holds (about three float64 copies of a split) at
most 4 GiB and at most this machine's memory.

>>> ds = load("synthetic-hierarchy:branching=3x2,train=4,test=2", "branching=3x2,train=4,test=2")
>>> ds.num_classes_per_level, ds.level_names, ds.parents
([3, 6], ['coarse', 'fine'], [[0, 0, 1, 1, 2, 2]])
>>> len(ds.y_train), ds.input_shape
(24, (32,))
"""

from __future__ import annotations

import math
import re

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, field_validator

from learners.base import MAX_SEED
from learners.config_model import ConfigModel
from stream.data.datasets.dataset import (
    MAX_CLASSES,
    MAX_LEVELS,
    Dataset,
    DatasetError,
    check_bytes,
)


class SyntheticHierarchyParams(ConfigModel):
    """Options of ``synthetic-hierarchy:k=v,...``."""

    model_config = ConfigDict(extra="forbid")

    branching: list[int] = Field(
        default_factory=lambda: [5, 4],
        max_length=MAX_LEVELS,
        description="children per node, per level: 5x4",
    )
    dim: int = Field(32, gt=0, description="feature dimension")
    train: int = Field(100, gt=0, description="training samples per leaf class")
    test: int = Field(50, gt=0, description="test samples per leaf class")
    separation: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="std of the root centres per dimension"
    )
    shrink: float = Field(
        0.6, gt=0, allow_inf_nan=False, description="child offset std relative to the level above"
    )
    noise: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="std of samples around their leaf centre"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("dim", "train", "test", "seed", mode="before")
    @classmethod
    def _whole(cls, value: object) -> object:
        # from the spec's text: "1.0" and "1e3" were read as counts
        if isinstance(value, str) and not re.fullmatch(r"[+-]?\d+", value):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value

    @field_validator("branching", mode="before")
    @classmethod
    def _parse_branching(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.lower().split("x")]
            except ValueError:
                raise ValueError(
                    f"expected counts joined by 'x' (e.g. 5x4), got {value!r}"
                ) from None
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("branching")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(b <= 0 for b in value):
            raise ValueError("every level needs at least one child per node")
        return value


def parse_options(argument: str | None) -> SyntheticHierarchyParams:
    """``k=v,k=v`` into validated parameters; a bad option raises one DatasetError naming it."""
    options: dict[str, str] = {}
    for item in (argument or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"synthetic-hierarchy: expected KEY=VALUE options, got {item!r}")
        if key.strip() in options:
            raise DatasetError(f"synthetic-hierarchy: option {key.strip()} given twice")
        options[key.strip()] = value.strip()
    try:
        return SyntheticHierarchyParams.model_validate(options)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DatasetError(f"synthetic-hierarchy: invalid options: {fields}") from None


def _tree(
    params: SyntheticHierarchyParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Leaf centres ``[leaves, dim]`` and each leaf's class per level ``[leaves, L]``."""
    centres = rng.normal(0.0, params.separation, size=(params.branching[0], params.dim))
    paths = np.arange(params.branching[0])[:, None]
    scale = params.separation
    for children in params.branching[1:]:
        scale *= params.shrink
        parent = np.repeat(np.arange(len(centres)), children)
        centres = centres[parent] + rng.normal(0.0, scale, size=(len(parent), params.dim))
        paths = np.concatenate([paths[parent], np.arange(len(parent))[:, None]], axis=1)
    return centres, paths


def _check_size(params: SyntheticHierarchyParams, machine: bool = True) -> None:
    """Refuse options whose arrays exceed the bound on a dataset or, with ``machine``, this
    machine's memory (a ``MemoryError`` mid-generation, or the kernel's OOM killer,
    otherwise), and trees with more leaf classes than a dataset may have. Generating a split
    holds about three float64 copies of it."""
    leaves = math.prod(params.branching)
    samples = leaves * (params.train + params.test)
    needed = 3 * 8 * params.dim * max(samples, leaves * len(params.branching))
    check_bytes(
        "synthetic-hierarchy",
        needed,
        f"{leaves} leaf classes x {params.train + params.test} samples x {params.dim} features",
        machine=machine,
    )
    if leaves > MAX_CLASSES:
        raise DatasetError(
            f"synthetic-hierarchy: branching {'x'.join(map(str, params.branching))} makes "
            f"{leaves} leaf classes, more than the {MAX_CLASSES} a dataset may have"
        )


def check(spec: str, argument: str | None) -> None:
    """The options' bounds that hold on any machine, checked without generating."""
    _check_size(parse_options(argument), machine=False)


def load(spec: str, argument: str | None) -> Dataset:
    params = parse_options(argument)
    _check_size(params)
    rng = np.random.default_rng(params.seed)
    centres, paths = _tree(params, rng)
    leaves = len(centres)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        leaf = np.repeat(np.arange(leaves), per_class)
        x = centres[leaf] + rng.normal(0.0, params.noise, size=(len(leaf), params.dim))
        return x.astype(np.float32), paths[leaf]

    X_train, levels_train = split(params.train)
    X_test, levels_test = split(params.test)
    depth = len(params.branching)
    names = {1: ["label"], 2: ["coarse", "fine"]}.get(
        depth, [f"level{lvl}" for lvl in range(depth)]
    )
    return Dataset(
        spec=spec,
        X_train=X_train,
        y_train=levels_train[:, -1].copy(),
        X_test=X_test,
        y_test=levels_test[:, -1].copy(),
        class_names=[".".join(str(int(c)) for c in path) for path in paths],
        y_train_levels=levels_train,
        y_test_levels=levels_test,
        level_names=names,
    )
