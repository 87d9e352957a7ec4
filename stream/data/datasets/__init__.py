"""Datasets addressed by a string (docs/datasets.md): ``digits``, ``fashion-mnist[:DIR]``,
``cifar100:DIR``, ``npz:PATH``, the generated ``synthetic-hierarchy[:k=v,...]`` and
river's datasets as ``river:NAME[?KEY=VALUE&...]``.

>>> ds = load_dataset("digits")
>>> ds.num_classes, ds.input_shape, len(ds.y_train), len(ds.y_test)
(10, (1, 8, 8), 1442, 355)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from stream.data.datasets.dataset import (
    MAX_CLASSES,
    MAX_LEVELS,
    Dataset,
    DatasetError,
    as_float_tensor,
)

__all__ = [
    "MAX_CLASSES",
    "MAX_LEVELS",
    "Dataset",
    "DatasetError",
    "as_float_tensor",
    "check_spec",
    "dataset_forms",
    "dataset_names",
    "load_dataset",
]

# name -> (module with ``load(spec, argument) -> Dataset`` and, for a generated dataset,
# ``check(spec, argument)``; what may follow the name, as docs/datasets.md writes it: "" for
# nothing, "[:X]" for an optional argument, ":X" for a required one); add a dataset with one
# line here.
_LOADERS: dict[str, tuple[str, str]] = {
    "digits": ("stream.data.datasets.digits", ""),
    "fashion-mnist": ("stream.data.datasets.fashion_mnist", "[:DIR]"),
    "cifar100": ("stream.data.datasets.cifar100", ":DIR"),
    "npz": ("stream.data.datasets.npz", ":PATH"),
    "river": ("stream.data.datasets.river_datasets", ":NAME[?KEY=VALUE&...]"),
    "synthetic-hierarchy": ("stream.data.datasets.synthetic_hierarchy", "[:k=v,...]"),
}


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def dataset_forms() -> list[str]:
    """Each dataset's spec as a user writes it, e.g. ``digits``, ``cifar100:DIR``."""
    return [name + _LOADERS[name][1] for name in dataset_names()]


# A spec names a file or a few options: longer is a mistake or an attack (and every error
# about it quotes it).
MAX_SPEC_CHARS = 1024


def _check_length(spec: str) -> None:
    if len(spec) > MAX_SPEC_CHARS:
        raise DatasetError(
            f"dataset spec {spec[:40]!r}... is {len(spec)} characters, at most {MAX_SPEC_CHARS}"
        )


def load_dataset(spec: str) -> Dataset:
    """Load the dataset ``spec`` (``NAME`` or ``NAME:ARGUMENT``)."""
    name, argument = _parts(spec)
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {spec!r}; known: {', '.join(dataset_forms())}")
    loader: Callable[[str, str | None], Dataset] = importlib.import_module(_LOADERS[name][0]).load
    return loader(spec, argument)


def check_spec(spec: str) -> None:
    """Refuse a generated dataset's spec whose options break a fixed bound (sample counts,
    sizes, seeds), without generating, reading or importing anything heavy: what a recorded
    stream's header can be held to before its dataset is built. A spec whose dataset is read
    from files, or is unknown, passes here; :func:`load_dataset` checks it when it loads."""
    name, argument = _parts(spec)
    if name in _LOADERS:
        check = getattr(importlib.import_module(_LOADERS[name][0]), "check", None)
        if check is not None:
            check(spec, argument)


def _parts(spec: str) -> tuple[str, str | None]:
    """``spec``'s name and argument (None: none), its length checked, and no argument given to
    a known dataset that takes none (digits:anything loaded digits, ignoring it)."""
    _check_length(spec)
    name, _, argument = spec.partition(":")
    if name in _LOADERS and argument and not _LOADERS[name][1]:
        raise DatasetError(f"dataset {name} takes no argument, got {spec!r}")
    return name, argument or None
