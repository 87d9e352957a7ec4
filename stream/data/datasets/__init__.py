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

from stream.data.datasets.dataset import Dataset, DatasetError, as_float_tensor

__all__ = ["Dataset", "DatasetError", "as_float_tensor", "dataset_names", "load_dataset"]

# name -> module with ``load(spec, argument) -> Dataset``; add a dataset with one line here.
_LOADERS: dict[str, str] = {
    "digits": "stream.data.datasets.digits",
    "fashion-mnist": "stream.data.datasets.fashion_mnist",
    "cifar100": "stream.data.datasets.cifar100",
    "npz": "stream.data.datasets.npz",
    "river": "stream.data.datasets.river_datasets",
    "synthetic-hierarchy": "stream.data.datasets.synthetic_hierarchy",
}


def dataset_names() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(spec: str) -> Dataset:
    """Load the dataset ``spec`` (``NAME`` or ``NAME:ARGUMENT``)."""
    name, _, argument = spec.partition(":")
    if name not in _LOADERS:
        raise DatasetError(
            f"unknown dataset {spec!r}; known: {', '.join(f'{n}[:ARG]' for n in dataset_names())}"
        )
    loader: Callable[[str, str | None], Dataset] = importlib.import_module(_LOADERS[name]).load
    return loader(spec, argument or None)
